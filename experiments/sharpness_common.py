"""Helpers shared by the seed-003 sharpness experiments: Euler trajectories and detection summaries."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from memjax import metrics, sharpness


def euler_path(field, x0, num_steps: int, t_end: float = 1.0):
  """Euler states of ``ẋ = field(x, t)`` from ``t = 0``: ``(num_steps + 1, N, D)`` at ``linspace(0, t_end, n+1)``."""
  h = t_end / num_steps

  def step(x, i):
    t = jnp.full(x.shape[:1], i * h, x.dtype)
    x = x + h * field(x, t)
    return x, x

  _, xs = jax.lax.scan(step, x0, jnp.arange(num_steps))
  return jnp.concatenate([x0[None], xs])


def detection(scores, labels) -> dict:
  """AUROC, TPR@1%FPR and TPR@3%FPR (higher score = memorised); NaN when a class is empty."""
  labels = np.asarray(labels, bool)
  scores = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0, posinf=1e300, neginf=-1e300)
  if labels.all() or not labels.any():
    return {"auroc": float("nan"), "tpr_at_1pct_fpr": float("nan"), "tpr_at_3pct_fpr": float("nan")}
  return {"auroc": metrics.auroc(scores, labels), "tpr_at_1pct_fpr": metrics.tpr_at_fpr(scores, labels, 0.01),
          "tpr_at_3pct_fpr": metrics.tpr_at_fpr(scores, labels, 0.03)}


def profile_scores(prof: sharpness.Profile) -> dict:
  """Sharpness scores (higher = sharper) from a :class:`Profile`: each ``(T, N)``."""
  return {"neg_trace_H": -np.asarray(prof.trace), "neg_lambda_min": -np.asarray(prof.bottom[..., 0]),
          "score_norm_sq": np.asarray(prof.score_sq)}


def roc_points(scores, labels):
  from sklearn import metrics as skm
  fpr, tpr, _ = skm.roc_curve(np.asarray(labels, bool), np.nan_to_num(np.asarray(scores, np.float64)))
  return fpr, tpr
