"""Sharpness experiments' :smoke configs run end to end in-process (training, sharpness, SAIL)."""

import numpy as np
import pytest
from smoke import run_smoke


def test_sharpness_toy_smoke(tmp_path):
  res = run_smoke("sharpness.toy", tmp_path)
  assert 0 < res["memorised_fraction"] < 1
  assert set(res["detection_at_t_detect"]) == {"neg_trace_H", "neg_lambda_min", "score_norm_sq"}
  for d in res["detection_at_t_detect"].values():
    assert 0 <= d["auroc"] <= 1 and 0 <= d["tpr_at_1pct_fpr"] <= 1
  assert len(res["detection_over_t"]["neg_trace_H"]) == len(res["config"]["detect"]["t_grid"])
  _check_arms(res["sail"]["arms"], res["config"]["sail"], quality_key="mean_nn_dist_to_fresh_data")
  assert res["sail"]["state"] == "euler"


ARMS = {"plain", "sail", "sail_score", "sail_shell", "rejection"}


def _check_arms(arms, sail_cfg, quality_key):
  """Every arm reported; compute within the equal budget; typicality and quality finite."""
  assert set(arms) == ARMS
  budget = sail_cfg["max_iters"] * sail_cfg["step_cost"]
  for a in arms.values():
    assert 0 <= a["M_c"] <= 1 and 0 < a["accepted_fraction"] <= 1
    assert np.isfinite([a["sq_norm_over_D"], a["quality"][quality_key]]).all()
    assert 1 <= a["mean_compute_loss_evals"] <= budget + 1
  assert arms["plain"]["mean_compute_loss_evals"] == 1
  # SAIL minimises a loss with the prior term α||x||: its accepted latents are less typical than
  # the plain noise they start from (||x||²/D below it; the smokes read 0.44 vs 1.00 on the toy,
  # 0.91 vs 1.00 on digits). A sign error in the prior's gradient would raise it instead.
  assert arms["sail"]["sq_norm_over_D"] < arms["plain"]["sq_norm_over_D"]
  for name in ("sail", "sail_score", "sail_shell"):
    s = arms[name]
    assert s["loss_after_median"] <= s["loss_before_median"] + 1e-6
    assert s["settings"]["rule"] == "sd_scaled"
    assert s["settings"]["delta"] > 0 and s["settings"]["alpha"] > 0
    assert abs(s["settings"]["prior_to_allowance"] - 6.4 / 1.8) < 1e-6
  assert arms["rejection"]["settings"] == arms["sail"]["settings"]  # the same loss and threshold


def test_sharpness_digits_smoke(tmp_path):
  res = run_smoke("sharpness.digits", tmp_path)
  assert set(res["detection_first_step"]) == {"hs_detector", "wen_eps", "wen_velocity"}
  arms = res["sail"]["arms"]
  _check_arms(arms, res["config"]["sail"], quality_key="mean_dist_to_nearest_heldout")
  for a in arms.values():  # the laplace classifier's features, equal-size subsets
    q = a["quality"]
    assert np.isfinite(q["digits_fd"]) and 0 <= q["precision"] <= 1 and 0 <= q["recall"] <= 1
    assert q["num_equal_size"] == arms["plain"]["quality"]["num_equal_size"]
  assert res["sail"]["state"] == "initial" and res["detection_state"] == "initial"
  assert set(res["detection_within_label_1"]) == {"hs_detector", "wen_eps", "wen_velocity"}


def test_sharpness_detection_smoke(tmp_path):
  res = run_smoke("sharpness.detection", tmp_path)
  assert res["num_prompts"] == 8 and res["num_memorised_prompts"] == 4
  assert abs(res["detection_time"]["t"] - 0.0708) < 1e-3
  assert res["detection_state"] == "initial"
  for k in ("hs_norm", "hs_sq", "wen_eps", "wen_velocity"):
    d = res["per_prompt_detection"][k]
    assert d["num_prompts"] == 8 and d["generations_per_prompt"] == 2
    assert 0 <= d["auroc"] <= 1 and 0 <= res["within_class_auroc"][k]["mean"] <= 1
  s = res["sail_memorised_prompts"]
  assert s["num_latents"] == 8 and set(s["arms"]) == ARMS
  assert all(0 <= a["M_c"] <= 1 for a in s["arms"].values())


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


def test_outcome_bootstrap_and_verdict_on_synthetic_arms():
  """aggregate: seed means equal direct means, CIs bracket them, paired differences; verdict."""
  from experiments.sharpness import outcome
  from experiments.sharpness.configs.outcome import get_config

  rng = np.random.default_rng(0)
  p_mem = {"plain": 0.5, "sail": 0.5, "sail_score": 0.55, "sail_shell": 0.1, "rejection": 0.5}
  raws, results = [], []
  for _ in range(3):
    n = 400
    raw = {"ratio": {}, "converged": {}, "sq_norm_over_D": {}, "quality_nn": {}, "units": {}}
    for a, p in p_mem.items():
      raw["ratio"][a] = np.where(rng.random(n) < p, 0.1, 0.9)
      raw["converged"][a] = np.ones(n, bool)
      raw["sq_norm_over_D"][a] = rng.chisquare(2, n) / 2
      raw["quality_nn"][a] = rng.random(n) * (2.0 if a == "sail_shell" else 1.0)
      raw["units"][a] = np.full(n, 3.0)
    raws.append(raw)
    results.append({"config": {"detect": {"mem_c": 1 / 3}}})
  cfg = get_config("toy_smoke")
  cfg.bootstrap = 200
  agg = outcome.aggregate(raws, results, cfg)
  for a in p_mem:
    r = agg["arms"][a]
    want = np.mean([np.mean(x["ratio"][a] <= 1 / 3) for x in raws])
    np.testing.assert_allclose(r["M_c"], want, rtol=1e-12)
    assert r["M_c_ci"][0] <= r["M_c"] <= r["M_c_ci"][1]
    assert r["compute_loss_evals"] == 3.0
  d = agg["paired_vs_rejection"]["sail_shell_minus_rejection"]
  assert d["M_c_ci"][1] < 0 and d["nn_dist_ci"][0] > 0  # lower M_c, worse quality
  v = outcome.verdict(agg)
  assert v["sail_shell"].startswith("lower M_c than the rejection control but worse quality")
  assert v["sail"].startswith("does not beat")


def test_outcome_fast_fd_equals_the_library_fd():
  from experiments.sharpness import outcome
  from memjax import metrics

  rng = np.random.default_rng(1)
  a = rng.standard_normal((120, 8))
  b = rng.standard_normal((90, 8)) @ rng.standard_normal((8, 8)) + 0.3
  np.testing.assert_allclose(
    outcome.fd_fast(a, *outcome.held_stats(b)), metrics.frechet_distance(a, b), rtol=1e-9
  )


@pytest.mark.slow
def test_outcome_toy_smoke(tmp_path):
  res = run_smoke("sharpness.outcome", tmp_path, "toy_smoke")
  assert set(res["arms"]) == {"plain", "sail", "sail_score", "sail_shell", "rejection"}
  assert set(res["verdict"]) == {"plain", "sail", "sail_score", "sail_shell"}
  for a in res["arms"].values():
    assert a["M_c_ci"][0] <= a["M_c"] <= a["M_c_ci"][1]
  # The pooled arms keep SAIL's signature: less typical latents than plain noise (0.43 vs 0.92).
  arms = res["arms"]
  assert arms["sail"]["sq_norm_over_D"] < arms["plain"]["sq_norm_over_D"]
