"""Pieces shared by the sharpness experiments: the conditional fit, Euler paths, the SNR-matched
detection time, profile scores, SAIL and its stats.

ROC curves of the detectors: :func:`experiments.plotting.roc_panel`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from memjax import nets, paths, sampling, sharpness, training


def fit_conditional(x, y, num_classes: int, cfg, key):
  """Conditional FM of a :class:`memjax.nets.CondMLPField` on images ``x (N, D)`` with labels
  ``y (N,)`` in ``[0, num_classes)``: label dropout ``cfg.train.p_uncond`` (for classifier-free
  guidance), ``cfg.model`` widths, :func:`experiments.common.fit` with ``cfg.train``.

  Returns ``(u, null_label, params, losses)`` with ``u(params, x, t, y)``.
  """
  k_init, k_train = jax.random.split(key)
  dim = int(x.shape[1])
  M, T = cfg.model, cfg.train
  module = nets.CondMLPField(
    dim=dim, num_classes=num_classes, hidden=tuple(M.hidden), time_dim=M.time_dim
  )
  u = nets.cond_velocity_fn(module)
  params = nets.init_cond_params(module, k_init, dim)
  loss = training.cond_fm_objective(
    u, jnp.asarray(x), jnp.asarray(y), module.null_label, T.batch_size, T.p_uncond
  )
  params, losses, _ = common.fit(loss, params, T, k_train, progress=cfg.progress)
  return u, module.null_label, params, losses


def euler_path(field, x0, num_steps: int, t_end: float = 1.0):
  """Euler states ``(num_steps + 1, N, D)`` from ``t = 0`` to ``t_end``.

  See :func:`memjax.sampling.euler_trajectory`; ``field(x (N, D), t)``.
  """
  return sampling.euler_trajectory(field, x0, num_steps, 0.0, t_end)


def sd_first_step_noise_to_signal(
  beta_start: float = 0.00085,
  beta_end: float = 0.012,
  train_steps: int = 1000,
  inference_steps: int = 50,
  steps_offset: int = 1,
) -> tuple[float, int]:
  """``(σ/ψ, timestep)`` of Stable Diffusion's first DDIM step (float64 numpy).

  SD v1: "scaled_linear" betas ``β = linspace(√β_start, √β_end, train_steps)²``,
  ``ᾱ_k = Π_{j≤k}(1 − β_j)``; DDIM with ``inference_steps`` steps and ``steps_offset`` starts at
  ``k = (train_steps // inference_steps)(inference_steps − 1) + steps_offset`` (981 for 50 steps),
  where ``ψ = √ᾱ_k ≈ 0.076``, ``σ = √(1 − ᾱ_k)`` (signal/noise ``ψ/σ ≈ 0.0762``).
  """
  betas = np.linspace(np.sqrt(beta_start), np.sqrt(beta_end), train_steps, dtype=np.float64) ** 2
  k = (train_steps // inference_steps) * (inference_steps - 1) + steps_offset
  abar = float(np.prod(1.0 - betas[: k + 1]))
  return float(np.sqrt((1.0 - abar) / abar)), int(k)


def detection_time(detect_cfg, schedule=None) -> dict:
  """The detection time: ``detect_cfg.t_detect`` when set, else the time of ``schedule`` (default
  linear FM) with the noise-to-signal ratio of SD's first DDIM step
  (:func:`sd_first_step_noise_to_signal` with ``detect_cfg.sd``), by
  :func:`memjax.paths.time_at_noise_to_signal` — FM ``t = 1/(1 + σ/ψ) ≈ 0.0708``, fixed, unlike
  ``1/num_steps``. Returns ``{"t", "noise_to_signal", "rule", ...}`` for results.json.
  """
  schedule = schedule or paths.linear_fm()
  if detect_cfg.get("t_detect", None) is not None:
    t = float(detect_cfg.t_detect)
    return {"t": t, "noise_to_signal": float(paths.noise_to_signal(schedule, t)), "rule": "fixed"}
  ratio, k = sd_first_step_noise_to_signal(**detect_cfg.sd.to_dict())
  t = float(paths.time_at_noise_to_signal(schedule, ratio))
  return {
    "t": t,
    "noise_to_signal": ratio,
    "signal_to_noise": 1.0 / ratio,
    "sd_timestep": k,
    "rule": "sigma/psi matched to SD v1's first DDIM step",
  }


def split_index(t_split: float, num_steps: int) -> int:
  """Number of Euler steps :func:`split_path` takes up to ``t_split``: ``max(1, round(t·n))``."""
  return max(1, int(round(t_split * num_steps)))


def split_path(field, x0, t_split: float, num_steps: int):
  """Euler states ``(S + 1, N, D)`` from ``t = 0`` through ``t_split`` (exactly a grid time) to 1.

  :func:`split_index` ``n1`` steps up to ``t_split``, then ``max(1, num_steps − n1)`` steps to 1;
  ``states[n1]`` is the sampler's state at ``t_split``.
  """
  n1 = split_index(t_split, num_steps)
  a = sampling.euler_trajectory(field, x0, n1, 0.0, t_split)
  b = sampling.euler_trajectory(field, a[-1], max(1, num_steps - n1), t_split, 1.0)
  return jnp.concatenate([a, b[1:]])


def state_map(field, t_s: float, num_steps: int):
  """``x (D,) ↦`` the Euler state at ``t_s`` from noise ``x`` (``round(t_s · num_steps)`` steps, at
  least 1): SAIL's ``state_fn``, so that ``s^Δ`` is evaluated where the sampler actually is."""
  n_s = max(1, int(round(t_s * num_steps)))
  return lambda x: sampling.euler_trajectory(field, x[None], n_s, 0.0, t_s)[-1, 0]


def profile_scores(prof: sharpness.Profile) -> dict:
  """Sharpness scores (higher = sharper) of a :class:`memjax.sharpness.Profile`; each ``(T, N)``."""
  return {
    "neg_trace_H": -np.asarray(prof.trace),
    "neg_lambda_min": -np.asarray(prof.bottom[..., 0]),
    "score_norm_sq": np.asarray(prof.score_sq),
  }


SAIL_OPTIONS = (
  "objective",
  "alpha",
  "delta",
  "threshold",
  "threshold_rel",
  "threshold_rise",
  "rounds_per_rise",
  "steps_per_round",
  "lr",
  "max_iters",
)


def sail(g, x0, sail_cfg, state_fn=None, key=None, cond=None) -> tuple[sharpness.SailResult, float]:
  """:func:`memjax.sharpness.sail` of the field ``g`` (at ``state_fn(x)``) from every row of ``x0``
  with the options of ``sail_cfg`` (``cfg.sail``, fields of :data:`SAIL_OPTIONS`; missing ones
  take the library defaults); returns the result and its seconds (compilation included)."""
  opts = {k: sail_cfg[k] for k in SAIL_OPTIONS if k in sail_cfg}
  with common.Timer() as t:
    res = sharpness.sail(g, x0, state_fn=state_fn, key=key, cond=cond, **opts)
    res.x.block_until_ready()
  return res, t.seconds


def sail_stats(res: sharpness.SailResult, x0) -> dict:
  """Iterations, rounds, convergence, thresholds, median loss before / after and ``E||x0||²``."""
  conv = np.asarray(res.converged)
  return {
    "mean_iterations": float(np.mean(np.asarray(res.iterations))),
    "converged_fraction": float(np.mean(conv)),
    "num_not_converged": int(np.sum(~conv)),
    "mean_rounds": float(np.mean(np.asarray(res.rounds))),
    "num_reseeded_slots": int(np.sum(np.asarray(res.rounds) > 1)),
    "initial_threshold": float(res.initial_threshold),
    "max_threshold_used": float(np.max(np.asarray(res.threshold))),
    "loss_before_median": float(np.median(np.asarray(res.losses[:, 0]))),
    "loss_after_median": float(np.median(np.asarray(res.losses[:, -1]))),
    "mean_sq_norm_x0": {
      "plain": float(jnp.mean(jnp.sum(x0**2, 1))),
      "sail": float(jnp.mean(jnp.sum(res.x**2, 1))),
    },
  }
