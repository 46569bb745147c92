"""Evaluation metrics: detection, distribution distances and sample quality.

Detection (AUROC with a bootstrap interval, TPR at a fixed FPR, per-prompt detection), a 1D KL
to a target density, the odd-symmetry score of a field, the energy distance, and sample quality
in a feature space: the Fréchet distance between fitted Gaussians and the improved k-NN
precision and recall.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, distributed, neighbours


def _scores_labels(scores, labels):
  scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel().astype(bool)
  if scores.shape != labels.shape:
    raise ValueError(
      f"`scores` and `labels` must have the same length; got {scores.shape} and {labels.shape}."
    )
  _checks.check_finite("scores", scores)
  if labels.all() or not labels.any():
    raise ValueError("`labels` must contain both positives and negatives.")
  return scores, labels


def auroc(scores, labels) -> float:
  """Area under the ROC curve, ``P(s⁺ > s⁻) + ½ P(s⁺ = s⁻)``, by scikit-learn.

  Args:
    scores: detector values, shape ``(N,)``; a higher score means more likely positive.
    labels: ``(N,)`` booleans (or 0/1), ``True`` for a positive.

  Returns:
    The AUROC as a Python float.

  Raises:
    ValueError: if the lengths differ, a score is non-finite, or one class is empty.
  """
  from sklearn import metrics

  scores, labels = _scores_labels(scores, labels)
  return float(metrics.roc_auc_score(labels, scores))


def tpr_at_fpr(scores, labels, fpr: float = 0.01) -> float:
  """The standard TPR@x%FPR: the largest TPR on the ROC curve among thresholds with FPR ≤ ``fpr``.

  Args:
    scores: detector values, shape ``(N,)``; a higher score means more likely positive.
    labels: ``(N,)`` booleans (or 0/1), ``True`` for a positive.
    fpr: the false-positive-rate budget, in ``[0, 1]``.

  Returns:
    The TPR as a Python float.

  Raises:
    ValueError: if ``fpr`` is outside ``[0, 1]``, the lengths differ, a score is non-finite, or
      one class is empty.
  """
  from sklearn import metrics

  if not 0 <= fpr <= 1:
    raise ValueError(f"`fpr` must be in [0, 1]; got {fpr}.")
  scores, labels = _scores_labels(scores, labels)
  fprs, tprs, _ = metrics.roc_curve(labels, scores)
  return float(np.max(tprs[fprs <= fpr]))


def _auroc_rows(scores, pos):
  """AUROC of every row of ``scores`` ``(B, N)`` with positives ``pos`` ``(B, N)`` (ties: ½)."""
  from scipy import stats

  ranks = stats.rankdata(scores, axis=1)
  n_pos = pos.sum(axis=1)
  n_neg = pos.shape[1] - n_pos
  u = np.sum(np.where(pos, ranks, 0.0), axis=1) - n_pos * (n_pos + 1) / 2.0
  return u / (n_pos * n_neg)


def _check_resampling(num_resamples, level=0.5):
  if isinstance(num_resamples, bool) or not isinstance(num_resamples, (int, np.integer)):
    raise ValueError(f"`num_resamples` must be an int >= 1; got {num_resamples!r}.")
  if num_resamples < 1:
    raise ValueError(f"`num_resamples` must be an int >= 1; got {num_resamples!r}.")
  if not 0 < level < 1:
    raise ValueError(f"`level` must be in (0, 1); got {level}.")


def auroc_bootstrap(scores, labels, *, num_resamples: int = 1000, seed: int = 0):
  """AUROC and its stratified bootstrap replicates (the resamples of :func:`auroc_ci`).

  Args:
    scores: detector values, shape ``(N,)``; a higher score means more likely positive.
    labels: ``(N,)`` booleans, ``True`` for a positive.
    num_resamples: bootstrap resamples ``B``, ``≥ 1``.
    seed: seed of the resampling (a NumPy generator).

  Returns:
    ``(auroc, replicates (B,))``.

  Raises:
    ValueError: as :func:`auroc_ci`.
  """
  _check_resampling(num_resamples)
  scores, labels = _scores_labels(scores, labels)
  pos, neg = scores[labels], scores[~labels]
  rng = np.random.default_rng(seed)
  rp = pos[rng.integers(0, len(pos), (num_resamples, len(pos)))]
  rn = neg[rng.integers(0, len(neg), (num_resamples, len(neg)))]
  both = np.concatenate([rp, rn], axis=1)
  is_pos = np.zeros(both.shape, bool)
  is_pos[:, : len(pos)] = True
  return auroc(scores, labels), _auroc_rows(both, is_pos)


def auroc_ci(scores, labels, *, num_resamples: int = 1000, level: float = 0.95, seed: int = 0):
  """AUROC with a stratified percentile-bootstrap confidence interval.

  Each resample draws ``n⁺`` positives and ``n⁻`` negatives with replacement from their own
  class (so every resample has both classes) and computes the Mann–Whitney AUROC
  ``(Σ_{i∈+} rank_i − n⁺(n⁺+1)/2) / (n⁺ n⁻)`` (mid-ranks for ties, equal to
  :func:`auroc`); the interval is the ``(1 ∓ level)/2`` quantiles of the resampled values.

  Args:
    scores: detector values, shape ``(N,)``; a higher score means more likely positive.
    labels: ``(N,)`` booleans, ``True`` for a positive.
    num_resamples: bootstrap resamples, ``≥ 1``.
    level: coverage of the interval, in ``(0, 1)``.
    seed: seed of the resampling (a NumPy generator).

  Returns:
    ``(auroc, lo, hi)`` as Python floats.

  Raises:
    ValueError: if ``num_resamples`` or ``level`` is invalid, the lengths differ, a score is
      non-finite, or one class is empty.

  References:
    Efron and Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall (1993).
  """
  _check_resampling(num_resamples, level)
  value, boot = auroc_bootstrap(scores, labels, num_resamples=num_resamples, seed=seed)
  lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
  return value, float(lo), float(hi)


def mean_diff_ci(a, b, *, num_resamples: int = 1000, level: float = 0.95, seed: int = 0):
  """``mean(a) − mean(b)`` of two independent samples with a percentile-bootstrap interval.

  Each resample draws ``a`` and ``b`` with replacement, independently; e.g. the memorised
  fraction of generated samples against that of held-out real points (0/1 values).

  Args:
    a: values, shape ``(n,)``, finite.
    b: values, shape ``(m,)``, finite.
    num_resamples: bootstrap resamples, ``≥ 1``.
    level: coverage of the interval, in ``(0, 1)``.
    seed: seed of the resampling.

  Returns:
    ``(difference, lo, hi)`` as Python floats.

  Raises:
    ValueError: if a sample is empty or non-finite, or ``num_resamples`` / ``level`` is invalid.
  """
  a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
  for name, v in (("a", a), ("b", b)):
    if v.size == 0:
      raise ValueError(f"`{name}` must hold at least one value.")
    _checks.check_finite(name, v)
  _check_resampling(num_resamples, level)
  rng = np.random.default_rng(seed)
  ra = a[rng.integers(0, len(a), (num_resamples, len(a)))].mean(axis=1)
  rb = b[rng.integers(0, len(b), (num_resamples, len(b)))].mean(axis=1)
  lo, hi = np.quantile(ra - rb, [(1 - level) / 2, (1 + level) / 2])
  return float(a.mean() - b.mean()), float(lo), float(hi)


def kde_log_density(samples: jax.Array, x: jax.Array, bandwidth: float | None = None) -> jax.Array:
  """1D Gaussian kernel density estimate ``log p̂(x) = log mean_n N(x; s_n, h²)``.

  Args:
    samples: the kernel centres ``s_n``, any shape (flattened).
    x: evaluation points, any shape (flattened).
    bandwidth: the kernel width ``h``; by default Scott's rule ``h = 1.06 std(s) n^{−1/5}``.

  Returns:
    ``log p̂`` at the flattened ``x``, shape ``(G,)``.
  """
  samples = jnp.ravel(samples)
  if bandwidth is None:
    bandwidth = 1.06 * jnp.std(samples) * samples.shape[0] ** (-1 / 5)
  z = (jnp.ravel(x)[:, None] - samples[None, :]) / bandwidth
  return (
    jax.scipy.special.logsumexp(-0.5 * z**2, axis=1)
    - jnp.log(samples.shape[0])
    - jnp.log(bandwidth)
    - 0.5 * jnp.log(2 * jnp.pi)
  )


def kl_to_target_1d(
  target_log_prob, samples: jax.Array, grid: jax.Array, bandwidth: float | None = None
) -> jax.Array:
  """``KL(p ‖ q̂) = ∫ p log(p / q̂)`` by the trapezoid rule on ``grid``, ``q̂`` a KDE of ``samples``.

  The KDE log density (:func:`kde_log_density`) is floored at −50 to keep the integral finite.

  Args:
    target_log_prob: ``log p``, a callable ``(G,) -> (G,)``.
    samples: draws defining ``q̂``, any shape (flattened).
    grid: integration points ``(G,)``, increasing.
    bandwidth: KDE bandwidth; Scott's rule by default.

  Returns:
    The scalar KL estimate.

  Raises:
    ValueError: if ``samples`` holds NaN or inf.
  """
  _checks.check_finite("samples", samples)
  logp = target_log_prob(grid)
  logq = jnp.maximum(kde_log_density(samples, grid, bandwidth), -50.0)
  return jnp.trapezoid(jnp.exp(logp) * (logp - logq), grid)


def symmetry_score(apply_fn, params, xs: jax.Array, ts: jax.Array) -> jax.Array:
  """Odd-symmetry score ``E(θ) = Σ‖u(x,t) + u(−x,t)‖² / Σ‖u(x,t) − u(−x,t)‖²`` over an (x, t) grid.

  Zero for an exactly odd field (as the exact two-point field ``u*`` is).

  Args:
    apply_fn: a field ``u(params, x, t)``.
    params: its parameters.
    xs: grid points, shape ``(G, D)``.
    ts: times, shape ``(T,)``.

  Returns:
    The scalar score ``E(θ)``.
  """

  def at(t):
    tt = jnp.full(xs.shape[:1], t, xs.dtype)
    up, um = apply_fn(params, xs, tt), apply_fn(params, -xs, tt)
    return jnp.sum((up + um) ** 2), jnp.sum((up - um) ** 2)

  num, den = jax.vmap(at)(ts)
  return jnp.sum(num) / jnp.sum(den)


def detection_report(scores, labels, fprs=(0.01, 0.03)) -> dict:
  """AUROC and TPR at each FPR in ``fprs`` for a detector (higher score = positive).

  Non-finite scores are not replaced: those rows are excluded and counted in
  ``num_nonfinite``. When a class is empty the metrics are NaN (and say so via
  ``num_positive`` / ``num_negative``) instead of raising, so sweeps can report them.

  Args:
    scores: detector values, shape ``(N,)``.
    labels: ``(N,)`` booleans (or 0/1), ``True`` for a positive.
    fprs: false-positive-rate budgets for :func:`tpr_at_fpr`.

  Returns:
    Plain Python numbers: ``num_positive``, ``num_negative``, ``num_nonfinite``, ``auroc`` and
    ``tpr_at_<x>pct_fpr`` for each entry of ``fprs``.

  Raises:
    ValueError: if ``scores`` and ``labels`` differ in length.
  """
  scores = np.asarray(scores, np.float64).ravel()
  labels = np.asarray(labels).ravel().astype(bool)
  if scores.shape != labels.shape:
    raise ValueError(
      f"`scores` and `labels` must have the same length; got {scores.shape} and {labels.shape}."
    )
  finite = np.isfinite(scores)
  s, y = scores[finite], labels[finite]
  out = {
    "num_positive": int(y.sum()),
    "num_negative": int((~y).sum()),
    "num_nonfinite": int((~finite).sum()),
  }
  ok = y.any() and not y.all()
  out["auroc"] = auroc(s, y) if ok else float("nan")
  for f in fprs:
    out[f"tpr_at_{f * 100:g}pct_fpr"] = tpr_at_fpr(s, y, f) if ok else float("nan")
  return out


def energy_distance(x: jax.Array, y: jax.Array) -> jax.Array:
  """Energy distance ``2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖`` (V-statistic, ≥ 0).

  Zero iff the two empirical measures coincide; it penalises both collapse (too little spread)
  and blur (mass off the data), unlike a nearest-neighbour distance. Caveat: in high dimension
  it is dominated by the first two moments, so a moment-matched Gaussian can score better than
  sharp but mode-dropping samples.

  Args:
    x: points, shape ``(n, d)``.
    y: points, shape ``(m, d)``.

  Returns:
    The scalar energy distance.

  Raises:
    ValueError: if ``x`` or ``y`` is not 2-D or their last axes differ.
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  _checks.check_ndim("x", x, 2, "(n, d)")
  _checks.check_ndim("y", y, 2, "(m, d)")
  _checks.check_last_dim("y", y, x.shape[1], "(m, d)")
  dtype = jnp.result_type(x, y)
  return _energy_distance(x.astype(dtype), y.astype(dtype))


@jax.jit
def _energy_distance(x, y):
  mean_dist = lambda a, b: jnp.mean(
    jnp.sqrt(
      jnp.maximum(jnp.sum(a**2, 1)[:, None] - 2.0 * a @ b.T + jnp.sum(b**2, 1)[None, :], 0.0)
    )
  )
  return 2.0 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def per_prompt_detection(scores, labels, fprs=(0.01, 0.03)) -> dict:
  """Detection over prompts, the protocol of the sharpness and geometry papers.

  Each prompt's score is the mean over its ``n`` generations (average the per-generation norms,
  as :func:`memjax.sharpness.averaged_over_generations` and the authors' code do), and prompts —
  not individual samples — are ranked: AUROC and TPR at each FPR of ``fprs`` over ``P`` prompts
  (:func:`detection_report`; a prompt with a non-finite generation is excluded and counted).

  Args:
    scores: a detector's value for each of ``n`` generations of each of ``P`` prompts,
      shape ``(P, n)``.
    labels: ``(P,)`` booleans, ``True`` for a memorised prompt.
    fprs: false-positive-rate budgets.

  Returns:
    The :func:`detection_report` dict plus ``num_prompts`` and ``generations_per_prompt``.

  Raises:
    ValueError: if ``scores`` is not 2-D or disagrees with ``labels`` on ``P``.

  References:
    Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
    Probability Landscapes", arXiv:2412.04140.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).ravel()
  _checks.check_ndim("scores", scores, 2, "(P, n)")
  if scores.shape[0] != labels.shape[0]:
    raise ValueError(
      f"`scores` (P, n) and `labels` (P,) must agree on P; got {scores.shape} and {labels.shape}."
    )
  out = detection_report(np.mean(scores, axis=1), labels, fprs)
  out.update(num_prompts=int(scores.shape[0]), generations_per_prompt=int(scores.shape[1]))
  return out


def group_by_prompt(scores, prompts, memorised, *, min_fraction: float = 0.5):
  """Per-prompt score matrix and labels from per-generation values.

  Generations sharing a prompt (a class label, a caption id) are stacked, ``scores[p]`` holding
  the ``n`` generations of prompt ``p`` (every prompt must have the same ``n``, as in the
  papers' protocol); a prompt is memorised when at least ``min_fraction`` of its generations
  are. The result feeds :func:`per_prompt_detection`.

  Args:
    scores: ``(N,)`` a detector's value per generation.
    prompts: ``(N,)`` integer prompt id of each generation.
    memorised: ``(N,)`` booleans, the per-generation labels (e.g. ``r ≤ c``).
    min_fraction: fraction of memorised generations that makes a prompt memorised, in ``(0, 1]``.

  Returns:
    ``(ids (P,), scores (P, n), labels (P,))``, prompts in increasing id order.

  Raises:
    ValueError: if the lengths differ, ``min_fraction`` is outside ``(0, 1]``, or the prompts
      do not all have the same number of generations.
  """
  scores = np.asarray(scores, np.float64).ravel()
  prompts = np.asarray(prompts).ravel()
  memorised = np.asarray(memorised).ravel().astype(bool)
  if not scores.shape == prompts.shape == memorised.shape:
    raise ValueError(
      f"`scores`, `prompts`, `memorised` must have one length; got {scores.shape}, "
      f"{prompts.shape}, {memorised.shape}."
    )
  if not 0 < min_fraction <= 1:
    raise ValueError(f"`min_fraction` must be in (0, 1]; got {min_fraction}.")
  ids, counts = np.unique(prompts, return_counts=True)
  if len(set(counts.tolist())) != 1:
    raise ValueError(
      f"every prompt must have the same number of generations; got counts {counts.tolist()}."
    )
  order = np.argsort(prompts, kind="stable")
  n = int(counts[0])
  s = scores[order].reshape(len(ids), n)
  m = memorised[order].reshape(len(ids), n)
  return ids, s, m.mean(axis=1) >= min_fraction


# ---------------------------------------------------------------------------
# Sample quality in a feature space: Fréchet distance and improved precision / recall.


def _feature_set(name: str, feats, min_points: int) -> np.ndarray:
  """``feats`` as a finite float64 ``(N, d)`` array with ``N ≥ min_points``."""
  arr = np.asarray(_checks.as_float(name, feats), np.float64)
  _checks.check_ndim(name, arr, 2, "(N, d)")
  if arr.shape[0] < min_points:
    raise ValueError(
      f"`{name}` must hold at least {min_points} points (rows); got shape {arr.shape}."
    )
  if arr.shape[1] < 1:
    raise ValueError(f"`{name}` must have at least one feature (column); got shape {arr.shape}.")
  _checks.check_finite(name, arr)
  return arr


class GaussianStats(NamedTuple):
  """Mean and covariance of a Gaussian fitted to a feature set (float64 numpy)."""

  mean: np.ndarray  # (d,)
  cov: np.ndarray  # (d, d), unbiased (ddof = 1)
  num: int  # number of points it was fitted to


def gaussian_stats(feats, name: str = "feats") -> GaussianStats:
  """Sample mean ``μ = mean_n f_n`` and covariance ``Σ = Σ_n (f_n − μ)(f_n − μ)ᵀ / (N − 1)``.

  Computed in float64 whatever the input dtype, so that statistics of a fixed reference set can
  be computed once and reused by :func:`frechet_distance_gaussians`.

  Args:
    feats: feature vectors, shape ``(N, d)`` with ``N ≥ 2``.
    name: the caller's argument name for ``feats`` in error messages.

  Returns:
    :class:`GaussianStats` with ``mean (d,)``, ``cov (d, d)`` and ``num = N``.

  Raises:
    ValueError: if ``feats`` is not 2-D, holds fewer than 2 points, or holds NaN or inf.
  """
  f = _feature_set(name, feats, 2)
  mean = f.mean(axis=0)
  centred = f - mean[None, :]
  cov = centred.T @ centred / (f.shape[0] - 1)
  return GaussianStats(mean, 0.5 * (cov + cov.T), int(f.shape[0]))


def _check_stats(name: str, stats: GaussianStats, dim: int | None = None):
  mean, cov = np.asarray(stats.mean, np.float64), np.asarray(stats.cov, np.float64)
  _checks.check_ndim(f"{name}.mean", mean, 1, "(d,)")
  d = mean.shape[0] if dim is None else dim
  if mean.shape != (d,) or cov.shape != (d, d):
    raise ValueError(
      f"`{name}` must have mean (d,) and cov (d, d) with d = {d}; got {mean.shape} and {cov.shape}."
    )
  _checks.check_finite(f"{name}.mean", mean)
  _checks.check_finite(f"{name}.cov", cov)
  if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12 * max(1.0, float(np.abs(cov).max()))):
    raise ValueError(f"`{name}.cov` must be symmetric.")
  return mean, cov


def _psd_eig(name: str, sym: np.ndarray):
  """Eigenpairs of a symmetric PSD matrix, rounding-level negative eigenvalues set to 0."""
  w, v = np.linalg.eigh(0.5 * (sym + sym.T))
  scale = max(float(np.max(np.abs(w))), np.finfo(np.float64).tiny)
  if w.min() < -1e-8 * scale:
    raise ValueError(
      f"`{name}` must be positive semi-definite; its smallest eigenvalue is {w.min():.3g} "
      f"(largest magnitude {scale:.3g})."
    )
  return np.clip(w, 0.0, None), v


def frechet_distance_gaussians(a: GaussianStats, b: GaussianStats) -> float:
  """Fréchet (2-Wasserstein²) distance between ``N(μa, Σa)`` and ``N(μb, Σb)``.

  ``FD = ‖μa − μb‖² + tr(Σa + Σb − 2 (Σa^{1/2} Σb Σa^{1/2})^{1/2})``.

  The matrix square roots are taken in float64 by eigendecompositions of symmetric PSD
  matrices (``Σa^{1/2}``, then the eigenvalues of ``Σa^{1/2} Σb Σa^{1/2}``), so the result is
  real and finite also for singular covariances (fewer points than features), where the
  non-symmetric ``sqrtm(Σa Σb)`` of the usual FID code can turn complex. It equals that trace
  term: ``Σa Σb`` is similar to ``Σa^{1/2} Σb Σa^{1/2}``. A result below zero by rounding is
  returned as 0.

  Args:
    a: statistics of the first Gaussian (:func:`gaussian_stats`).
    b: statistics of the second Gaussian, same dimension.

  Returns:
    The distance as a Python float, ``≥ 0``.

  Raises:
    ValueError: if the shapes disagree, or a covariance is non-finite, not symmetric or has a
      clearly negative eigenvalue.

  References:
    Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium", arXiv:1706.08500 (the Fréchet Inception Distance); Dowson and Landau, "The
    Fréchet distance between multivariate normal distributions", J. Multivariate Anal. 1982.
  """
  mu_a, cov_a = _check_stats("a", a)
  mu_b, cov_b = _check_stats("b", b, mu_a.shape[0])
  w_a, v_a = _psd_eig("a.cov", cov_a)
  _psd_eig("b.cov", cov_b)
  root_a = (v_a * np.sqrt(w_a)[None, :]) @ v_a.T
  w_mid, _ = _psd_eig("Σa^{1/2} Σb Σa^{1/2}", root_a @ cov_b @ root_a)
  diff = mu_a - mu_b
  fd = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.sum(np.sqrt(w_mid)))
  return max(fd, 0.0)


def frechet_distance(feats_a, feats_b) -> float:
  """Fréchet distance between Gaussians fitted to two feature sets.

  ``FD = ‖μa − μb‖² + tr(Σa + Σb − 2 (Σa^{1/2} Σb Σa^{1/2})^{1/2})`` with ``(μ, Σ)`` the sample
  mean and unbiased covariance of each set (:func:`gaussian_stats`,
  :func:`frechet_distance_gaussians`). In the feature space of an Inception network this is the
  FID; memjax uses it in the feature space of a small digits classifier.

  The estimate is biased upwards at finite sample sizes (two independent samples of one
  distribution score ``> 0``, the more so the fewer points per feature dimension), so compare
  values only at equal set sizes, beside the value of real held-out data of that size.

  Args:
    feats_a: features of the first set, shape ``(Na, d)``, ``Na ≥ 2``.
    feats_b: features of the second set, shape ``(Nb, d)``, ``Nb ≥ 2``.

  Returns:
    The distance as a Python float, ``≥ 0``.

  Raises:
    ValueError: if a set is not 2-D, holds fewer than 2 points or NaN/inf, or the feature
      dimensions differ.

  References:
    Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium", arXiv:1706.08500.
  """
  a = gaussian_stats(feats_a, "feats_a")
  b = gaussian_stats(feats_b, "feats_b")
  if a.mean.shape != b.mean.shape:
    raise ValueError(
      f"`feats_a` and `feats_b` must have the same feature dimension; got {a.mean.shape[0]} "
      f"and {b.mean.shape[0]}."
    )
  return frechet_distance_gaussians(a, b)


class PrecisionRecall(NamedTuple):
  """Improved precision and recall of a generated set against a real set."""

  precision: float  # fraction of generated points inside the real manifold
  recall: float  # fraction of real points inside the generated manifold
  k: int  # neighbourhood size of the k-NN balls


# Elements of one (query block, centre block, d) difference array of `_in_balls`.
_BALL_BLOCK_ELEMENTS = 1 << 21


@functools.partial(jax.jit, static_argnames=("query_chunk", "centre_chunk"))
def _in_balls(queries, centres, radii, query_chunk, centre_chunk):
  """``(Q,)`` bool: whether ``‖q − c_j‖ ≤ r_j`` for some ``j``, blockwise with exact differences."""
  nq, d = queries.shape
  nc = centres.shape[0]
  q_blocks = distributed.pad_rows(queries, query_chunk).reshape(-1, query_chunk, d)
  c_blocks = distributed.pad_rows(centres, centre_chunk).reshape(-1, centre_chunk, d)
  pad = c_blocks.shape[0] * centre_chunk - nc
  r_blocks = jnp.concatenate([radii, jnp.full((pad,), -1.0, radii.dtype)]).reshape(
    -1, centre_chunk
  )  # padded centres get a negative radius: never hit

  def per_query_block(q):
    def merge(hit, blk):
      c, r = blk
      dist = jnp.sqrt(jnp.sum((q[:, None, :] - c[None, :, :]) ** 2, -1))
      return hit | jnp.any(dist <= r[None, :], axis=1), None

    hit, _ = jax.lax.scan(merge, jnp.zeros((q.shape[0],), bool), (c_blocks, r_blocks))
    return hit

  return jax.lax.map(per_query_block, q_blocks).reshape(-1)[:nq]


def _manifold_fraction(queries, centres, radii) -> float:
  """Fraction of ``queries`` inside the union of balls ``B(c_j, r_j)``."""
  nq, d = queries.shape
  qc = max(1, min(nq, 64))
  cc = max(1, min(centres.shape[0], _BALL_BLOCK_ELEMENTS // (qc * d)))
  return float(jnp.mean(_in_balls(queries, centres, radii, qc, cc)))


def precision_recall(real_feats, fake_feats, k: int = 3) -> PrecisionRecall:
  """Improved precision and recall: k-NN-ball manifolds of the real and the generated features.

  Each set ``Φ`` defines a manifold, the union of balls ``B(φ, r_k(φ))`` with ``r_k(φ)`` the
  distance from ``φ`` to its ``k``-th nearest other point of ``Φ``. With
  ``f(x, Φ) = 1[∃ φ ∈ Φ: ‖x − φ‖ ≤ r_k(φ)]``::

    precision = mean_{g ∈ Φ_fake} f(g, Φ_real)     (generated points that look real)
    recall    = mean_{r ∈ Φ_real} f(r, Φ_fake)     (real points the generator covers)

  The radii come from :func:`memjax.neighbours.knn` (exact k-NN, own point excluded; duplicate
  points count as neighbours at distance 0); the membership test compares exact distances
  ``‖x − φ‖`` blockwise. Computed in the dtype of the inputs (float64 under ``jax_enable_x64``);
  a point at exactly the radius counts as inside up to rounding. Identical sets give
  ``P = R = 1``; a generator that drops modes keeps precision and loses recall.

  Args:
    real_feats: features of real data, shape ``(N, d)``, ``N ≥ k + 1``.
    fake_feats: features of generated data, shape ``(M, d)``, ``M ≥ k + 1``.
    k: neighbourhood size, an int ``≥ 1`` (the paper uses 3).

  Returns:
    :class:`PrecisionRecall` of Python floats and ``k``.

  Raises:
    ValueError: if a set is not 2-D, is smaller than ``k + 1`` points, holds NaN or inf, the
      feature dimensions differ, or ``k`` is not an int ``≥ 1``.

  References:
    Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative Models",
    arXiv:1904.06991.
  """
  if not (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1):
    raise ValueError(f"`k` must be an int >= 1; got {k!r}.")
  k = int(k)
  real = _checks.as_float("real_feats", real_feats)
  fake = _checks.as_float("fake_feats", fake_feats)
  for name, arr in (("real_feats", real), ("fake_feats", fake)):
    _checks.check_ndim(name, arr, 2, "(N, d)")
    if arr.shape[0] < k + 1:
      raise ValueError(
        f"`{name}` must hold at least k + 1 = {k + 1} points for k-NN radii; got shape "
        f"{tuple(arr.shape)}."
      )
    _checks.check_finite(name, arr)
  _checks.check_last_dim("fake_feats", fake, real.shape[1], "(M, d)")
  dtype = jnp.result_type(real, fake)
  real, fake = jnp.asarray(real, dtype), jnp.asarray(fake, dtype)
  r_real = neighbours.knn(real, real, k, exclude_self=True, names=("real_feats",) * 2)[0][:, -1]
  r_fake = neighbours.knn(fake, fake, k, exclude_self=True, names=("fake_feats",) * 2)[0][:, -1]
  precision = _manifold_fraction(fake, real, r_real)
  recall = _manifold_fraction(real, fake, r_fake)
  return PrecisionRecall(precision, recall, k)
