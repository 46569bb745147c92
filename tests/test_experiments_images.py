"""Image memorisation: :smoke end to end, then the posterior stage again from its checkpoint."""

import numpy as np
from smoke import check_geodesic_geometry, run_smoke

from memjax import memorisation


def test_images_memorisation_smoke(tmp_path):
  res = run_smoke("laplace.images", tmp_path / "a")
  cfg = res["config"]
  assert res["map"]["num_subset_params"] == 3 * 3 * 1 * 8 + 8  # first conv layer only
  assert 0.0 <= res["map"]["memorisation"]["M_c"][memorisation.c_label(1 / 3)] <= 1.0
  check_geodesic_geometry(res)  # ||θ_E − θ*|| = ||v||, ||θ_R − θ*|| ≤ ||v||, energy conserved
  assert res["map"]["grad_norm"] <= 1e-5 * res["map"]["grad_norm_before_refine"]  # the tilt
  for row in res["sweep"]:
    for g in row["sampling"].values():
      assert g["successful"] + g["failed"] == g["total"] == cfg["posterior"]["num_posterior"]
    for kind in cfg["posterior"]["samplers"]:
      if kind in row:
        assert len(row[kind]["memorisation"]["M_c"]) == len(cfg["eval"]["cs"])
        assert np.isfinite(row[kind]["nn_distance_to_heldout_mean"])
  again = run_smoke(
    "laplace.images", tmp_path / "b", overrides={"train.restore": res["checkpoint_dir"]}
  )
  assert again["map"]["resumed_from_step"] == cfg["train"]["steps"]
  np.testing.assert_allclose(again["map"]["ritz_values"], res["map"]["ritz_values"], rtol=1e-6)
