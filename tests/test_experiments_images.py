"""Image memorisation experiment: :smoke end to end, then the posterior stage again from its checkpoint."""
import numpy as np

from smoke import run_smoke


def test_images_memorisation_smoke(tmp_path):
  res = run_smoke("images_memorisation", tmp_path / "a")
  assert res["map"]["num_subset_params"] == 3 * 3 * 1 * 8 + 8  # first conv layer only
  assert 0.0 <= res["map"]["memorisation"]["M_c"][3] <= 1.0
  for row in res["sweep"]:
    g = row["geodesics"]
    assert g["successful"] + g["failed"] == g["total"] == res["config"]["num_posterior"]
    for kind in ("euclidean", "riemannian"):
      if kind in row:
        assert len(row[kind]["memorisation"]["M_c"]) == len(res["config"]["cs"])
        assert np.isfinite(row[kind]["nn_distance_to_heldout_mean"])
  again = run_smoke("images_memorisation", tmp_path / "b", extra=[f"--config.restore={res['checkpoint_dir']}"])
  assert again["map"]["resumed_from_step"] == res["config"]["steps"]
  np.testing.assert_allclose(again["map"]["ritz_values"], res["map"]["ritz_values"], rtol=1e-6)
