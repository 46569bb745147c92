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
      s["M_c_sail_all"],
      s["quality_mean_dist_to_nearest_heldout"]["sail"],
      s["loss_before_median"],
      s["loss_after_median"],
    ]
  ).all()
  assert s["loss_after_median"] <= s["loss_before_median"] + 1e-6
  assert 0 < s["converged_fraction"] <= 1 and s["num_not_converged"] >= 0
  assert set(res["detection_within_label_1"]) == {"hs_detector", "wen_eps", "wen_velocity"}


def test_sharpness_detection_smoke(tmp_path):
  res = run_smoke("sharpness.detection", tmp_path)
  assert res["num_prompts"] == 8 and res["num_memorised_prompts"] == 4
  assert abs(res["detection_time"]["t"] - 0.0708) < 1e-3
  for k in ("hs_norm", "wen_eps", "wen_velocity"):
    d = res["per_prompt_detection"][k]
    assert d["num_prompts"] == 8 and d["generations_per_prompt"] == 2
    assert 0 <= d["auroc"] <= 1 and 0 <= res["within_class_auroc"][k]["mean"] <= 1
  s = res["sail_memorised_prompts"]
  assert s["num_latents"] == 8 and 0 <= s["M_c_plain"] <= 1 and 0 <= s["M_c_sail_all"] <= 1


def test_detection_time_is_sd_first_step_snr_not_one_over_steps():
  import jax.numpy as jnp
  from smoke import load_config

  from experiments import common
  from experiments.sharpness import pipeline
  from memjax import paths

  ratio, k = pipeline.sd_first_step_noise_to_signal()
  assert k == 981 and abs(1 / ratio - 0.0762) < 5e-4  # SD v1's first DDIM step, ψ/σ ≈ 0.076
  with common.x64(True):
    t = float(paths.time_at_noise_to_signal(paths.linear_fm(), jnp.float64(ratio)))
    np.testing.assert_allclose(float(paths.noise_to_signal(paths.linear_fm(), t)), ratio, 1e-10)
  np.testing.assert_allclose(t, 1 / (1 + ratio), rtol=1e-10)  # FM closed form, ≈ 0.0708
  for name in ("sharpness.detection", "sharpness.digits"):
    cfg = load_config(name, "")
    d = pipeline.detection_time(cfg.detect)
    np.testing.assert_allclose(d["t"], t, rtol=1e-5)
    assert abs(d["t"] - 1 / cfg.sample.num_steps) > 0.04  # not t_1 = 1/num_steps
