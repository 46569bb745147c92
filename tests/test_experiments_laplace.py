"""Riemannian-Laplace toy experiments: :smoke configs end to end, with the paired comparison recorded."""
import numpy as np

from smoke import run_smoke


def _check_sweep(res):
  assert res["sweep"], "no eta rows"
  for row in res["sweep"]:
    g = row["geodesics"]
    assert g["total"] == res["config"]["num_posterior"] and g["successful"] + g["failed"] == g["total"]
    if "euclidean" in row:
      for kind in ("euclidean", "riemannian"):
        assert np.isfinite(row[kind]["heldout_fm_loss"]["mean"])
        assert len(row[kind]["memorisation"]["M_c"]) == len(res["config"]["cs"])
  for claim in res["claims"].values():
    assert {"per_eta", "riemannian_lower_at_all_eta"} <= set(claim)


def test_two_point_1d_smoke(tmp_path):
  res = run_smoke("two_point_1d", tmp_path)
  _check_sweep(res)
  row = res["sweep"][0]
  assert np.isfinite(row["euclidean"]["kl_target_vs_kde"]) and row["euclidean"]["symmetry_score"]["mean"] >= 0


def test_toy_2d_smoke(tmp_path):
  res = run_smoke("toy_2d", tmp_path)
  _check_sweep(res)
  assert np.isfinite(res["map"]["true_log_likelihood_mean"])
