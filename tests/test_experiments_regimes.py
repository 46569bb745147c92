"""noise_regimes experiment: :smoke end to end in-process (2D), and the digits data split."""

import jax
import numpy as np
from smoke import run_smoke

from experiments.regimes import noise_regimes
from experiments.regimes.configs import noise_regimes as configs
from memjax import data, memorisation


def test_noise_regimes_smoke(tmp_path):
  res = run_smoke("regimes.noise_regimes", tmp_path)
  run = res["toy2d"]["runs"][0]
  cv = run["curves"]
  assert len(cv["W"]) == len(cv["C"]) == len(cv["sigmas"]) == res["config"]["curves"]["num_sigmas"]
  assert np.all(np.diff(cv["W"]) <= 1e-6) and cv["C"][-1] >= cv["C"][0]
  assert len(run["window_swap"]["windows"]) == res["config"]["intervene"]["num_windows"]
  inter = run["interventions"]
  assert {"untouched", "targeted_lam1", "global_lam1"} <= set(inter)
  assert np.isfinite(inter["untouched"]["max_local_error"]) and inter["untouched"]["num_evals"] > 0
  # D* at every σ reproduces training points.
  assert run["window_swap"]["empirical_everywhere"]["M_c"][memorisation.c_label(1 / 3)] >= 0.9
  assert "n=16" in res["toy2d"]["headline"]


def test_digits_sets_are_disjoint_and_sized():
  data_cfg = configs.get_config("smoke").digits.data
  train, held = noise_regimes.load_sets("digits", 16, data_cfg, jax.random.PRNGKey(0))
  assert train.shape == (16, 64) and held.shape == (1797 - 16, 64)
  full, _ = data.load_digits(flatten=True)
  srt = lambda a: a[np.lexsort(np.asarray(a).T[::-1])]
  np.testing.assert_array_equal(srt(np.concatenate([train, held])), srt(full))  # a partition
