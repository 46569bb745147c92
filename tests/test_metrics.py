"""metrics against brute-force / closed-form references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import data, metrics


def test_auroc_matches_pair_counting():
  rng = np.random.default_rng(0)
  s = np.concatenate([rng.normal(1, 1, 60), rng.normal(0, 1, 80)])
  y = np.r_[np.ones(60), np.zeros(80)]
  pos, neg = s[y == 1], s[y == 0]
  brute = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
  assert metrics.auroc(s, y) == pytest.approx(brute, abs=1e-12)


def test_tpr_at_fpr_brute_force():
  rng = np.random.default_rng(1)
  s = np.concatenate([rng.normal(2, 1, 200), rng.normal(0, 1, 300)])
  y = np.r_[np.ones(200), np.zeros(300)]
  best = 0.0
  for thr in np.unique(s):
    pred = s >= thr
    if pred[y == 0].mean() <= 0.05:
      best = max(best, pred[y == 1].mean())
  assert metrics.tpr_at_fpr(s, y, 0.05) == pytest.approx(best)
  with pytest.raises(ValueError, match="`labels`"):
    metrics.auroc(s, np.ones_like(s))


def test_kl_small_for_matching_samples_and_large_otherwise():
  gmm = data.two_point_gmm(1.0, 0.2, jnp.float64)
  grid = jnp.linspace(-3, 3, 801)
  logp = lambda x: data.mixture_log_prob(gmm, x[:, None])
  good, _ = data.sample_mixture(jax.random.PRNGKey(0), gmm, 4000)
  bad = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (4000, 1))
  kl_good = float(metrics.kl_to_target_1d(logp, good, grid, bandwidth=0.05))
  kl_bad = float(metrics.kl_to_target_1d(logp, bad, grid, bandwidth=0.05))
  assert 0 <= kl_good < 0.05 < 1.0 < kl_bad


def test_kde_matches_scipy():
  from scipy import stats

  s = np.random.default_rng(2).normal(size=50)
  x = np.linspace(-2, 2, 9)
  h = 0.4
  ref = stats.gaussian_kde(s, bw_method=h / s.std(ddof=1)).logpdf(x)
  np.testing.assert_allclose(
    metrics.kde_log_density(jnp.asarray(s), jnp.asarray(x), h), ref, rtol=1e-10
  )


def test_symmetry_score():
  xs = jnp.linspace(0.1, 2, 5)[:, None]
  ts = jnp.linspace(0, 0.9, 4)
  odd = lambda p, x, t: jnp.sin(x) * (1 + t[:, None])
  assert float(metrics.symmetry_score(odd, None, xs, ts)) < 1e-20
  shifted = lambda p, x, t: jnp.sin(x) + 0.5
  # Σ(2·0.5)² / Σ(2 sin x)²
  expected = 4 * 5 * 0.25 / float(jnp.sum(4 * jnp.sin(xs) ** 2))
  assert float(metrics.symmetry_score(shifted, None, xs, ts)) == pytest.approx(expected, rel=1e-12)


def test_detection_report_excludes_nonfinite_and_handles_one_class():
  s = np.array([0.9, 0.8, np.nan, 0.1, 0.2, np.inf])
  y = np.array([1, 1, 1, 0, 0, 0])
  rep = metrics.detection_report(s, y)
  assert rep["num_nonfinite"] == 2 and rep["num_positive"] == 2 and rep["num_negative"] == 2
  assert rep["auroc"] == 1.0 and rep["tpr_at_1pct_fpr"] == 1.0 and rep["tpr_at_3pct_fpr"] == 1.0
  one = metrics.detection_report([0.1, 0.2], [1, 1])
  assert np.isnan(one["auroc"]) and one["num_negative"] == 0
