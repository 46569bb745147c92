"""Riemannian-Laplace toy experiments: :smoke configs end to end, paired comparison recorded."""

import numpy as np
from smoke import run_smoke


def _check_sweep(res):
  assert res["sweep"], "no eta rows"
  names = res["config"]["posterior"]["samplers"]
  num = res["config"]["posterior"]["num_posterior"]
  for row in res["sweep"]:
    assert set(row["sampling"]) == set(names)
    for g in row["sampling"].values():
      assert g["total"] == num and g["successful"] + g["failed"] == g["total"]
    assert "by_result" in row["sampling"]["riemannian"]  # the geodesic solver's outcomes
    p = row["paired"]
    assert p["total"] == num and p["kept"] + p["excluded"] == p["total"]
    assert p["kept"] <= min(g["successful"] for g in row["sampling"].values())
    if p["kept"]:
      for kind in names:
        assert row[kind]["num_models"] == p["kept"]
        assert np.isfinite(row[kind]["heldout_fm_loss"]["mean"])
        assert len(row[kind]["memorisation"]["M_c"]) == len(res["config"]["eval"]["cs"])
  for claim in res["claims"].values():
    assert {"per_eta", "riemannian_lower_at_all_eta"} <= set(claim)


def test_two_point_1d_smoke(tmp_path):
  res = run_smoke("laplace.two_point_1d", tmp_path)
  _check_sweep(res)
  row = res["sweep"][0]
  assert np.isfinite(row["euclidean"]["kl_target_vs_kde"])
  assert row["euclidean"]["symmetry_score"]["mean"] >= 0


def test_toy_2d_smoke(tmp_path):
  res = run_smoke("laplace.toy_2d", tmp_path)
  _check_sweep(res)
  assert np.isfinite(res["map"]["true_log_likelihood_mean"])
