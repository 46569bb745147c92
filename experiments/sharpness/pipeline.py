"""Pieces shared by the sharpness experiments: Euler paths, profile scores, ROC, SAIL stats."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from sklearn import metrics as skm

from memjax import sampling, sharpness


def euler_path(field, x0, num_steps: int, t_end: float = 1.0):
  """Euler states ``(num_steps + 1, N, D)`` from ``t = 0`` to ``t_end``.

  See :func:`memjax.sampling.euler_trajectory`; ``field(x (N, D), t)``.
  """
  return sampling.euler_trajectory(field, x0, num_steps, 0.0, t_end)


def profile_scores(prof: sharpness.Profile) -> dict:
  """Sharpness scores (higher = sharper) of a :class:`memjax.sharpness.Profile`; each ``(T, N)``."""
  return {
    "neg_trace_H": -np.asarray(prof.trace),
    "neg_lambda_min": -np.asarray(prof.bottom[..., 0]),
    "score_norm_sq": np.asarray(prof.score_sq),
  }


def roc_points(scores, labels):
  """``(fpr, tpr)`` of a detector (higher score = positive); non-finite scores via nan_to_num."""
  fpr, tpr, _ = skm.roc_curve(
    np.asarray(labels, bool), np.nan_to_num(np.asarray(scores, np.float64))
  )
  return fpr, tpr


def sail_stats(res: sharpness.SailResult, x0) -> dict:
  """Iterations, convergence, median loss before / after and ``E||x0||²`` of a SAIL run."""
  return {
    "mean_iterations": float(np.mean(np.asarray(res.iterations))),
    "converged_fraction": float(np.mean(np.asarray(res.converged))),
    "loss_before_median": float(np.median(np.asarray(res.losses[:, 0]))),
    "loss_after_median": float(np.median(np.asarray(res.losses[:, -1]))),
    "mean_sq_norm_x0": {
      "plain": float(jnp.mean(jnp.sum(x0**2, 1))),
      "sail": float(jnp.mean(jnp.sum(res.x**2, 1))),
    },
  }
