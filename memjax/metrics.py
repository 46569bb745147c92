"""Evaluation metrics: detection (AUROC, TPR at fixed FPR), 1D KL to a target mixture, odd-symmetry
score.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks


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
  """Area under the ROC curve (scikit-learn), higher score = more likely positive."""
  from sklearn import metrics

  scores, labels = _scores_labels(scores, labels)
  return float(metrics.roc_auc_score(labels, scores))


def tpr_at_fpr(scores, labels, fpr: float = 0.01) -> float:
  """The standard TPR@x%FPR: the largest TPR on the ROC curve among thresholds with FPR ≤
  ``fpr``.
  """
  from sklearn import metrics

  if not 0 <= fpr <= 1:
    raise ValueError(f"`fpr` must be in [0, 1]; got {fpr}.")
  scores, labels = _scores_labels(scores, labels)
  fprs, tprs, _ = metrics.roc_curve(labels, scores)
  return float(np.max(tprs[fprs <= fpr]))


def kde_log_density(samples: jax.Array, x: jax.Array, bandwidth: float | None = None) -> jax.Array:
  """Gaussian KDE ``log p̂(x) = log mean_n N(x; s_n, h²)`` in 1D; ``h`` by Scott's rule if not
  given.
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
  """``KL(p ‖ q̂) = ∫ p log(p / q̂)`` by the trapezoid rule on ``grid``, ``q̂`` a KDE of
  ``samples``.

  ``target_log_prob(x (G,)) -> (G,)``; the KDE log density is floored at −50 to keep the integral
  finite.
  """
  _checks.check_finite("samples", samples)
  logp = target_log_prob(grid)
  logq = jnp.maximum(kde_log_density(samples, grid, bandwidth), -50.0)
  return jnp.trapezoid(jnp.exp(logp) * (logp - logq), grid)


def symmetry_score(apply_fn, params, xs: jax.Array, ts: jax.Array) -> jax.Array:
  """Odd-symmetry score ``E(θ) = Σ||u(x,t) + u(−x,t)||² / Σ||u(x,t) − u(−x,t)||²`` over an (x, t)
  grid.

  Zero for an exactly odd field (as the exact two-point field u* is); ``xs`` ``(G, D)``, ``ts``
  ``(T,)``.
  """

  def at(t):
    tt = jnp.full(xs.shape[:1], t, xs.dtype)
    up, um = apply_fn(params, xs, tt), apply_fn(params, -xs, tt)
    return jnp.sum((up + um) ** 2), jnp.sum((up - um) ** 2)

  num, den = jax.vmap(at)(ts)
  return jnp.sum(num) / jnp.sum(den)


def detection_report(scores, labels, fprs=(0.01, 0.03)) -> dict:
  """AUROC and TPR at each FPR in ``fprs`` for a detector (higher score = positive), as plain
  Python.

  Non-finite scores are not replaced: those rows are excluded and counted in
  ``num_nonfinite``. When a class is empty the metrics are NaN (and say so via
  ``num_positive`` / ``num_negative``) instead of raising, so sweeps can report them.
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
  """Energy distance ``2E||X − Y|| − E||X − X'|| − E||Y − Y'||`` (V-statistic, ≥ 0).

  ``x`` ``(n, d)`` and ``y`` ``(m, d)``; returns a scalar.

  Zero iff the two empirical measures coincide; it penalises both collapse
  (too little spread) and blur (mass off the data), unlike a nearest-neighbour
  distance. Caveat: in high dimension it is dominated by the first two moments,
  so a moment-matched Gaussian can score better than sharp but mode-dropping samples.
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
  """Detection over PROMPTS (the papers' protocol): ``scores (P, n)`` holds a detector's value for
  each of ``n`` generations of each of ``P`` prompts; labels ``(P,)`` mark memorised prompts.

  Each prompt's score is the mean over its ``n`` generations (average the per-generation norms,
  as :func:`memjax.sharpness.averaged_over_generations` and the authors' code do), and prompts —
  not individual samples — are ranked: AUROC and TPR at each FPR of ``fprs`` over ``P`` prompts
  (:func:`detection_report`; a prompt with a non-finite generation is excluded and counted).
  Returns that dict plus ``num_prompts`` and ``generations_per_prompt``.
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
