"""Helpers shared by the seed-003 sharpness experiments: Euler trajectories and detection summaries."""
from __future__ import annotations

import numpy as np

from memjax import metrics, sampling, sharpness


def euler_path(field, x0, num_steps: int, t_end: float = 1.0):
  """Euler states ``(num_steps + 1, N, D)`` from ``t = 0`` to ``t_end`` (:func:`memjax.sampling.euler_trajectory`)."""
  return sampling.euler_trajectory(field, x0, num_steps, 0.0, t_end)


detection = metrics.detection_report


def profile_scores(prof: sharpness.Profile) -> dict:
  """Sharpness scores (higher = sharper) from a :class:`Profile`: each ``(T, N)``."""
  return {"neg_trace_H": -np.asarray(prof.trace), "neg_lambda_min": -np.asarray(prof.bottom[..., 0]),
          "score_norm_sq": np.asarray(prof.score_sq)}


def roc_points(scores, labels):
  from sklearn import metrics as skm
  fpr, tpr, _ = skm.roc_curve(np.asarray(labels, bool), np.nan_to_num(np.asarray(scores, np.float64)))
  return fpr, tpr
