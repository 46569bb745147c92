"""noise_regimes experiment: :smoke end to end (2D), and the digits data path without a subprocess."""
import sys

import jax
import numpy as np

from smoke import ROOT, run_smoke


def test_noise_regimes_smoke(tmp_path):
  res = run_smoke("noise_regimes", tmp_path)
  run = res["toy2d"]["runs"][0]
  cv = run["curves"]
  assert len(cv["W"]) == len(cv["C"]) == len(cv["sigmas"]) == res["config"]["num_curve_sigmas"]
  assert np.all(np.diff(cv["W"]) <= 1e-6) and cv["C"][-1] >= cv["C"][0]
  assert len(run["window_swap"]["windows"]) == res["config"]["num_windows"]
  inter = run["interventions"]
  assert {"untouched", "targeted_lam1", "global_lam1"} <= set(inter)
  assert np.isfinite(inter["untouched"]["max_local_error"]) and inter["untouched"]["num_evals"] > 0
  assert run["window_swap"]["empirical_everywhere"]["M_1/3"] >= 0.9  # D* at every σ reproduces training points
  assert "n=16" in res["toy2d"]["headline"]


def test_digits_sets_are_disjoint_and_sized():
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  from experiments import noise_regimes
  from experiments.configs import noise_regimes as cfgs
  train, held = noise_regimes.load_sets("digits", 16, cfgs.get_config("smoke").digits, jax.random.PRNGKey(0))
  assert train.shape == (16, 64) and held.shape == (1797 - 16, 64)
  from memjax import data
  full, _ = data.load_digits(flatten=True)
  srt = lambda a: a[np.lexsort(np.asarray(a).T[::-1])]
  np.testing.assert_array_equal(srt(np.concatenate([train, held])), srt(full))  # a partition of all images
