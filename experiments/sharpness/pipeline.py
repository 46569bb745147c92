"""Pieces shared by the sharpness experiments: Euler paths, profile scores, SAIL and its stats.

ROC curves of the detectors: :func:`experiments.plotting.roc_panel`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
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


def sail(g, x0, sail_cfg) -> tuple[sharpness.SailResult, float]:
  """Jitted :func:`memjax.sharpness.sail` of the field ``g`` from every row of ``x0`` with the
  options of ``sail_cfg`` (``cfg.sail``); returns the result and its seconds (compilation
  included)."""
  S = sail_cfg
  optimise = jax.jit(
    lambda x: sharpness.sail(
      g, x, alpha=S.alpha, delta=S.delta, threshold=S.threshold, lr=S.lr, max_iters=S.max_iters
    )
  )
  with common.Timer() as t:
    res = optimise(x0)
    res.x.block_until_ready()
  return res, t.seconds


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
