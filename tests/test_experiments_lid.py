"""LID experiments' :smoke configs end to end in-process (training, LID estimates, figure, JSON)."""

import numpy as np
from smoke import run_smoke


def _finite(*values):
  assert np.all(np.isfinite(np.asarray(values, np.float64))), values


def test_lid_manifolds_smoke(tmp_path):
  res = run_smoke("lid.manifolds", tmp_path)
  dims = res["config"]["data"]["dims"]
  for method in ("flipd", "flipd_knee", "nb", "lpca", "mle"):
    rows = res["per_component"][method]
    assert [r["analytic_lid"] for r in rows.values()] == list(dims)
    _finite(res["mae"][method], *[r["mean"] for r in rows.values()])
  _finite(res["t0_knee"], res["global"]["twonn"], res["global"]["mle_harmonic"])
  assert set(res["acceptance_flipd_mean_within_0.5_dims_le_4"]) == {
    f"component_{k}" for k, d in enumerate(dims) if d <= 4
  }


def test_mmh_von_mises_smoke(tmp_path):
  res = run_smoke("lid.mmh_von_mises", tmp_path)
  counts = res["mmh_counts"]
  assert sum(counts.values()) == res["num_samples"] > 0
  _finite(
    res["memorised_fraction"],
    res["low_lid_detector"]["auroc"],
    res["t0_knee"],
    res["mean_flipd"]["not_memorised"],
    res["lpca_agrees_with_analytic_lid_star"],
  )


def test_lid_detection_smoke(tmp_path):
  res = run_smoke("lid.detection", tmp_path)
  assert 0 < res["memorised_fraction"] < 1
  _finite(
    res["detector_flipd_exact"]["auroc"],
    res["detector_flipd_exact"]["tpr_at_1pct_fpr"],
    res["mean_flipd"]["memorised"],
    res["mean_flipd"]["not_memorised"],
  )
  assert len(res["detector_flipd_over_t0"]) == len(res["config"]["lid"]["t0_grid"])
