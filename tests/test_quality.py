"""Sample-quality metrics: Fréchet distance and improved precision / recall against independent
float64 computations, and the digits classifier of experiments/laplace/quality.py on known cases.
"""

import jax
import numpy as np
import pytest
import scipy.linalg

from experiments.laplace import quality
from memjax import data, metrics


def _random_cov(rng, d, scale=1.0):
  a = rng.normal(size=(d, d))
  return scale * (a @ a.T / d + 0.1 * np.eye(d))


def _fd_sqrtm(x, y):
  """The usual FID formula, ``tr sqrtm(Σa Σb)`` of the non-symmetric product (scipy)."""
  mu_a, mu_b = x.mean(0), y.mean(0)
  cov_a, cov_b = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
  root = scipy.linalg.sqrtm(cov_a @ cov_b)
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * np.real(root)))


# ---------------------------------------------------------------------------
# Fréchet distance.


def test_frechet_distance_matches_scipy_sqrtm_formula():
  rng = np.random.default_rng(0)
  for d, na, nb in ((1, 30, 40), (3, 50, 20), (6, 80, 60)):
    la, lb = np.linalg.cholesky(_random_cov(rng, d)), np.linalg.cholesky(_random_cov(rng, d, 2.0))
    x = rng.normal(size=(na, d)) @ la.T + rng.normal(size=d)[None, :]
    y = rng.normal(size=(nb, d)) @ lb.T
    assert metrics.frechet_distance(x, y) == pytest.approx(_fd_sqrtm(x, y), rel=1e-9, abs=1e-12)
    stats = metrics.gaussian_stats(x)
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-13)
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    np.testing.assert_allclose(stats.cov, cov, rtol=1e-12, atol=1e-14)
    assert stats.num == na


def test_frechet_distance_gaussians_closed_forms():
  rng = np.random.default_rng(1)
  d = 5
  a, b = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
  mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
  expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  diag = metrics.frechet_distance_gaussians(
    metrics.GaussianStats(mu_a, np.diag(a), 10), metrics.GaussianStats(mu_b, np.diag(b), 10)
  )
  assert diag == pytest.approx(expected, rel=1e-12)
  # Commuting covariances Q diag(a) Qᵀ, Q diag(b) Qᵀ: the same closed form.
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  rot = metrics.frechet_distance_gaussians(
    metrics.GaussianStats(q @ mu_a, q @ np.diag(a) @ q.T, 10),
    metrics.GaussianStats(q @ mu_b, q @ np.diag(b) @ q.T, 10),
  )
  assert rot == pytest.approx(expected, rel=1e-10)
  # A singular covariance (rank 1): N(0, diag(4, 0)) vs N(0, diag(1, 1)) = (2 − 1)² + (0 − 1)².
  sing = metrics.frechet_distance_gaussians(
    metrics.GaussianStats(np.zeros(2), np.diag([4.0, 0.0]), 2),
    metrics.GaussianStats(np.zeros(2), np.eye(2), 2),
  )
  assert sing == pytest.approx(2.0, rel=1e-12)


def test_frechet_distance_identical_sets_and_rotation_invariance():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(40, 4)), rng.normal(size=(30, 4)) * 1.5 + 1.0
  fd = metrics.frechet_distance(x, y)
  assert fd > 1.0
  assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-10 * fd)
  few = rng.normal(size=(5, 16))  # fewer points than features: singular covariance
  assert metrics.frechet_distance(few, few) == pytest.approx(0.0, abs=1e-10)
  q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  shift = rng.normal(size=4)[None, :]
  assert metrics.frechet_distance(x @ q.T + shift, y @ q.T + shift) == pytest.approx(fd, rel=1e-10)


def test_frechet_distance_refuses_bad_inputs():
  x = np.random.default_rng(3).normal(size=(10, 3))
  with pytest.raises(ValueError, match="`feats_a`.*at least 2"):
    metrics.frechet_distance(x[:1], x)
  bad = x.copy()
  bad[2, 1] = np.nan
  with pytest.raises(ValueError, match="`feats_b`.*non-finite"):
    metrics.frechet_distance(x, bad)
  with pytest.raises(ValueError, match="feature dimension"):
    metrics.frechet_distance(x, x[:, :2])
  with pytest.raises(ValueError, match="`feats_a`"):
    metrics.frechet_distance(x[0], x)
  good = metrics.gaussian_stats(x)
  not_psd = metrics.GaussianStats(np.zeros(3), np.diag([1.0, -1.0, 1.0]), 3)
  with pytest.raises(ValueError, match="`b.cov` must be positive semi-definite"):
    metrics.frechet_distance_gaussians(good, not_psd)
  with pytest.raises(ValueError, match="`b`"):
    metrics.frechet_distance_gaussians(good, metrics.gaussian_stats(x[:, :2]))


# ---------------------------------------------------------------------------
# Improved precision and recall.


def _pr_brute(real, fake, k):
  """Kynkäänniemi et al.'s definition with explicit loops."""

  def radii(s):
    out = []
    for i in range(len(s)):
      dists = sorted(np.linalg.norm(s[i] - s[j]) for j in range(len(s)) if j != i)
      out.append(dists[k - 1])
    return out

  def inside(x, s, r):
    return any(np.linalg.norm(x - s[j]) <= r[j] for j in range(len(s)))

  r_real, r_fake = radii(real), radii(fake)
  precision = np.mean([inside(g, real, r_real) for g in fake])
  recall = np.mean([inside(x, fake, r_fake) for x in real])
  return precision, recall


def test_precision_recall_matches_brute_force():
  rng = np.random.default_rng(4)
  seen = set()
  cases = ((1, 0.5, 25, 18), (3, 1.5, 25, 18), (3, 0.5, 12, 30), (5, 1.0, 12, 30))
  for k, shift, n, m in cases:
    real = rng.normal(size=(n, 3))
    fake = rng.normal(size=(m, 3)) * 1.3 + shift
    got = metrics.precision_recall(real, fake, k)
    p, r = _pr_brute(real, fake, k)
    assert (got.precision, got.recall, got.k) == (pytest.approx(p), pytest.approx(r), k)
    seen.update({p, r})
  assert len(seen - {0.0, 1.0}) > 5  # the cases exercise fractions, not only 0 and 1


def test_precision_recall_known_cases():
  rng = np.random.default_rng(5)
  real = rng.normal(size=(60, 4))
  same = metrics.precision_recall(real, real, 3)
  assert (same.precision, same.recall) == (1.0, 1.0)
  far = metrics.precision_recall(real, rng.normal(size=(50, 4)) + 100.0, 3)
  assert (far.precision, far.recall) == (0.0, 0.0)
  # Mode dropping: real = two far clusters, generated = copies of one of them.
  two = np.concatenate([real, real[:40] + 100.0])
  drop = metrics.precision_recall(two, real, 3)
  assert drop.precision == 1.0 and drop.recall == pytest.approx(60 / 100)
  f32 = metrics.precision_recall(real.astype(np.float32), real.astype(np.float32), 3)
  assert (f32.precision, f32.recall) == (1.0, 1.0)


def test_precision_recall_refuses_bad_inputs():
  x = np.random.default_rng(6).normal(size=(10, 3))
  for k in (0, 2.0, True, -1):
    with pytest.raises(ValueError, match="`k` must be an int"):
      metrics.precision_recall(x, x, k)
  with pytest.raises(ValueError, match="`fake_feats`.*at least k \\+ 1 = 4"):
    metrics.precision_recall(x, x[:3], 3)
  bad = x.copy()
  bad[0, 0] = np.inf
  with pytest.raises(ValueError, match="`real_feats`.*non-finite"):
    metrics.precision_recall(bad, x, 3)
  with pytest.raises(ValueError, match="`fake_feats`"):
    metrics.precision_recall(x, x[:, :2], 3)


# ---------------------------------------------------------------------------
# The digits classifier and quality_report.


@pytest.fixture(scope="module")
def smoke_classifier(tmp_path_factory):
  cfg = quality.get_config("smoke")
  cache = str(tmp_path_factory.mktemp("digits_classifier"))
  return cfg, cache, quality.load_classifier(cfg, cache)


def test_classifier_is_cached_and_reloaded(smoke_classifier):
  cfg, cache, first = smoke_classifier
  steps = cfg.train.steps
  assert first.info["resumed_from"] == {"split": 0, "full": 0}
  assert first.info["heldout_accuracy"] > 0.9 and first.info["num_heldout"] == 360
  again = quality.load_classifier(cfg, cache)
  assert again.info["resumed_from"] == {"split": steps, "full": steps}  # loaded, not retrained
  for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert again.info["heldout_accuracy"] == first.info["heldout_accuracy"]


def test_quality_report_known_cases(smoke_classifier):
  _, _, clf = smoke_classifier
  x, _ = data.load_digits(flatten=True)
  perm = np.random.default_rng(7).permutation(len(x))
  reference, other = x[perm[:200]], x[perm[200:400]]
  noise = np.random.default_rng(8).uniform(-1, 1, other.shape).astype(np.float32)
  same = quality.quality_report(reference, reference, clf)
  real = quality.quality_report(other, reference, clf, nn_distance=1.25)
  pure = quality.quality_report(noise, reference, clf)
  assert same["digits_fd"] <= 1e-6 * pure["digits_fd"]
  assert (same["precision"], same["recall"]) == (1.0, 1.0)
  assert real["digits_fd"] < 0.1 * pure["digits_fd"]
  assert real["precision"] > 0.8 and real["recall"] > 0.6 and real["confidence"] > 0.9
  assert pure["precision"] < 0.05 and pure["confidence"] < real["confidence"] - 0.2
  assert real["nn_distance"] == 1.25 and "nn_distance" not in pure
  assert real["num_samples"] == 200 and sum(real["class_fractions"]) == pytest.approx(1.0)
  # The (N, 8, 8, 1) layout of memjax.data.load_digits gives the same features as (N, 64).
  imgs, _ = data.load_digits()
  np.testing.assert_array_equal(quality.features(clf, imgs[:7]), quality.features(clf, x[:7]))


def test_quality_report_refuses_bad_images(smoke_classifier):
  _, _, clf = smoke_classifier
  x, _ = data.load_digits(flatten=True)
  with pytest.raises(ValueError, match="`samples` must have shape"):
    quality.quality_report(x[:10, :63], x[:10], clf)
  bad = x[:10].copy()
  bad[3, 3] = np.nan
  with pytest.raises(ValueError, match="`reference`.*non-finite"):
    quality.quality_report(x[:10], bad, clf)
  with pytest.raises(ValueError, match="`fake_feats`.*at least k \\+ 1"):
    quality.quality_report(x[:3], x[:10], clf)
  with pytest.raises(ValueError, match="`samples`.*non-finite"):
    quality.quality_report(np.full((10, 64), 1e39), x[:10], clf)
  with pytest.raises(ValueError, match="`probs` must have shape"):
    quality.confidence(np.zeros((0, 10)))
  with pytest.raises(ValueError, match="`nn_distance`.*non-finite"):
    quality.quality_report(x[:10], x[:10], clf, nn_distance=float("nan"))


def test_run_smoke_reuses_the_cache(smoke_classifier, tmp_path):
  cfg, cache, _ = smoke_classifier
  cfg = cfg.copy_and_resolve_references()
  cfg.cache_dir = cache
  res = quality.run(cfg, str(tmp_path))
  assert (tmp_path / "results.json").exists()
  assert res["classifier"]["resumed_from"]["full"] == cfg.train.steps
  cases = res["calibration"]["cases"]
  assert cases["copies_of_reference"]["digits_fd"] < 1e-6 * cases["uniform_noise"]["digits_fd"]
  assert set(res["calibration"]["real_vs_real_fd_by_size"]) == {"64"}


@pytest.mark.slow
def test_default_classifier_accuracy(tmp_path):
  clf = quality.load_classifier(quality.get_config(), str(tmp_path))
  assert clf.info["heldout_accuracy"] >= 0.95
  assert clf.info["train_accuracy"] >= 0.99
