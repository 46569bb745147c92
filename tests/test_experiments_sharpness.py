"""Sharpness experiments' :smoke configs run end to end in-process (training, sharpness, SAIL)."""

import numpy as np
from smoke import run_smoke


def test_sharpness_toy_smoke(tmp_path):
  res = run_smoke("sharpness.toy", tmp_path)
  assert 0 < res["memorised_fraction"] < 1
  assert set(res["detection_at_t_detect"]) == {"neg_trace_H", "neg_lambda_min", "score_norm_sq"}
  for d in res["detection_at_t_detect"].values():
    assert 0 <= d["auroc"] <= 1 and 0 <= d["tpr_at_1pct_fpr"] <= 1
  assert len(res["detection_over_t"]["neg_trace_H"]) == len(res["config"]["detect"]["t_grid"])
  s = res["sail"]
  assert 0 <= s["M_c_plain"] <= 1 and 0 <= s["M_c_sail"] <= 1
  assert s["loss_after_median"] <= s["loss_before_median"] + 1e-6


def test_sharpness_digits_smoke(tmp_path):
  res = run_smoke("sharpness.digits", tmp_path)
  assert set(res["detection_first_step"]) == {"hs_detector", "wen_eps", "wen_velocity"}
  s = res["sail"]
  assert np.isfinite(
    [
      s["M_c_plain"],
      s["M_c_sail"],
      s["quality_mean_dist_to_nearest_heldout"]["sail"],
      s["loss_before_median"],
      s["loss_after_median"],
    ]
  ).all()
  assert s["loss_after_median"] <= s["loss_before_median"] + 1e-6
