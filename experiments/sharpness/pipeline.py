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
  "threshold_step",
  "rounds_per_rise",
  "steps_per_round",
  "lr",
  "max_iters",
  "project",
)

#: SAIL arms of the experiments: name -> (direction, project); "rejection" is the control.
ARMS = {
  "sail": (None, False),  # None: sail_cfg.direction (default "eps")
  "sail_score": ("score", False),
  "sail_shell": (None, True),
}

#: The released SD v1 sharpness allowance ``τ_SD = thr − α √D = 8.2 − 0.05·128 = 1.8``.
TAU_SD = sharpness.SD_V1["threshold"] - sharpness.SD_V1["alpha"] * np.sqrt(sharpness.SD_V1["dim"])


def detection_state(detect_cfg, x0, field, t_det: float, num_steps: int):
  """The state the detectors score: ``detect_cfg.state = "initial"`` (default, as the released SD
  code scores the initial latent at its first timestep) ``(1 − t_det) x0``, the initial noise at
  the noise level of ``t_det`` (linear FM ``σ = 1 − t``); ``"euler"``: the guided Euler state at
  ``t_det`` (:func:`split_path` of ``field``)."""
  state = detect_cfg.get("state", "initial")
  if state == "initial":
    return (1.0 - float(t_det)) * x0
  if state == "euler":
    path = jax.jit(lambda x: split_path(field, x, t_det, num_steps))(x0)
    return path[split_index(t_det, num_steps)]
  raise ValueError(f"`detect.state` must be 'initial' or 'euler'; got {state!r}.")


def state_fn_of(sail_cfg, t_s: float, field=None, num_steps: int | None = None):
  """SAIL's ``state_fn``: ``"initial"`` (default) ``x ↦ (1 − t_s) x``, the initial latent placed at
  the noise level of ``t_s`` (linear FM: ``σ(t_s) = 1 − t_s``; as the released code scores the
  initial latent at SD's first timestep); ``"euler"``: the guided Euler state at ``t_s``
  (:func:`state_map` of ``field``). Returns ``(state_fn, network evaluations per state)``."""
  state = sail_cfg.get("state", "initial")
  if state == "initial":
    scale = 1.0 - float(t_s)
    return (lambda x: scale * x), 0
  if state == "euler":
    n_s = max(1, int(round(t_s * num_steps)))
    return state_map(field, t_s, num_steps), n_s
  raise ValueError(f"`sail.state` must be 'initial' or 'euler'; got {state!r}.")


def sail_settings(sail_cfg, g, x0, state_fn=None, cond=None) -> dict:
  """The keyword settings of :func:`memjax.sharpness.sail` for ``sail_cfg.settings``.

  ``"sd_scaled"`` (default; dimension-aware, the rule of ``configs/__init__.py``): with ``D`` the
  latent dimension and SD v1's released numbers (:data:`memjax.sharpness.SD_V1`,
  ``D_SD = 16384``, ``α_SD = 0.05``, ``δ_SD = 1``, threshold 8.2 = ``α_SD √D_SD`` (6.4) + the
  sharpness allowance ``τ_SD = 1.8``, rise 0.1 every 3 rounds):
  ``δ = δ_SD √(D / D_SD)`` (the same fraction of ``||x|| ≈ √D``);
  ``τ = threshold_rel × median_n S(x0_n)`` (``S`` the sharpness term of the plain noise, with that
  ``δ``); ``alpha_rule="value"``: ``α = (α_SD √D_SD / τ_SD) τ / √D`` (the prior term at the
  typical radius is the same multiple, 6.4/1.8 = 3.56, of the allowance as in SD);
  ``alpha_rule="fluctuation"``: ``α = α_SD τ / τ_SD`` (the spread of ``α||x||`` over draws,
  ``≈ α/√2`` in any ``D``, is the same fraction of the allowance as in SD, where it is
  0.035/1.8); ``thr_0 = α √D + τ``, rising by
  ``0.1 τ/τ_SD`` every 3 rounds. At ``D = D_SD`` and ``τ = 1.8`` these are SD's numbers.
  ``"relative"``: memjax's earlier adaptation (``alpha``, ``delta`` as given; threshold
  ``threshold_rel`` × the median plain-noise loss, rising ``threshold_rise`` relatively).
  ``"absolute"``: the released numbers as they are (8.2, +0.1 per 3 rounds, α = 0.05, δ = 1).
  Returns ``{"kwargs": ..., "record": ...}``.
  """
  rule = sail_cfg.get("settings", "sd_scaled")
  base = {k: sail_cfg[k] for k in SAIL_OPTIONS if k in sail_cfg}
  base.pop("project", None)
  sd = sharpness.SD_V1
  dim = int(x0.shape[1])
  if rule == "relative":
    return {"kwargs": base, "record": {"rule": rule}}
  if rule == "absolute":
    kw = dict(base, alpha=sd["alpha"], delta=sd["delta"], threshold=sd["threshold"])
    kw.update(threshold_step=sd["threshold_step"], rounds_per_rise=sd["rounds_per_rise"])
    return {"kwargs": kw, "record": {"rule": rule}}
  if rule != "sd_scaled":
    raise ValueError(f"`sail.settings` must be sd_scaled, relative or absolute; got {rule!r}.")
  delta = sd["delta"] * float(np.sqrt(dim / sd["dim"]))
  s0, _ = sharpness.sail_loss_terms(
    g, x0, objective=base.get("objective", "official"), state_fn=state_fn, delta=delta, cond=cond
  )
  tau = float(sail_cfg.threshold_rel * np.median(np.asarray(s0)))
  rho = sd["alpha"] * np.sqrt(sd["dim"]) / TAU_SD
  alpha_rule = sail_cfg.get("alpha_rule", "value")
  if alpha_rule == "value":  # the prior's VALUE at the typical radius: α√D = 3.56 τ
    alpha = float(rho * tau / np.sqrt(dim))
  elif alpha_rule == "fluctuation":  # its spread over draws, α·std||x|| ≈ α/√2, relative to τ
    alpha = float(sd["alpha"] * tau / TAU_SD)
  else:
    raise ValueError(f"`sail.alpha_rule` must be 'value' or 'fluctuation'; got {alpha_rule!r}.")
  kw = dict(base, alpha=alpha, delta=delta, threshold=alpha * np.sqrt(dim) + tau)
  kw.update(
    threshold_step=sd["threshold_step"] * tau / TAU_SD, rounds_per_rise=sd["rounds_per_rise"]
  )
  kw.pop("threshold_rel", None)
  kw.pop("threshold_rise", None)
  record = {
    "rule": rule,
    "delta": delta,
    "tau": tau,
    "alpha": alpha,
    "alpha_rule": alpha_rule,
    "prior_to_allowance": float(alpha * np.sqrt(dim) / tau),
    "threshold_0": float(kw["threshold"]),
    "threshold_step": float(kw["threshold_step"]),
    "median_sharpness_term_plain": float(np.median(np.asarray(s0))),
  }
  return {"kwargs": kw, "record": record}


def sail_arms(sail_cfg, g_of, x0, state_fn=None, key=None, cond=None, nfe_per_loss=1) -> dict:
  """Every arm of ``sail_cfg.arms`` on the same plain noise ``x0 (N, D)``.

  ``g_of(direction)`` builds SAIL's field (:func:`memjax.sharpness.sail_field`). SAIL arms
  (:data:`ARMS`): ``sail`` (ε-difference, the released code's direction), ``sail_score`` (``g =
  s^Δ``), ``sail_shell`` (ε-difference, iterates projected onto ``||x|| = √D``); ``rejection``
  (:func:`memjax.sharpness.rejection_control`: plain noise re-drawn under the ``sail`` arm's loss
  and threshold, budget ``max_iters × step_cost`` loss evaluations). Settings per direction by
  :func:`sail_settings`. Compute per latent, in loss evaluations: SAIL ``step_cost × Adam steps +
  1`` for the accepting evaluation; rejection, its draws; ``nfe_per_loss`` converts to network
  evaluations. Returns ``{arm: {"x", "converged", "units", "seconds", "settings", ...}}``.
  """
  step_cost = int(sail_cfg.get("step_cost", 3))
  settings = {}
  out = {}
  for arm in sail_cfg.get("arms", ("sail",)):
    if arm != "rejection" and arm not in ARMS:
      raise ValueError(f"unknown SAIL arm {arm!r}; known: {sorted(ARMS) + ['rejection']}.")
    direction, project = ARMS.get(arm, (None, False))
    direction = direction or sail_cfg.get("direction", "eps")
    if direction not in settings:
      settings[direction] = sail_settings(sail_cfg, g_of(direction), x0, state_fn, cond)
    st = settings[direction]
    kw = st["kwargs"]
    with common.Timer() as t:
      if arm == "rejection":
        kw_r = {k: v for k, v in kw.items() if k != "lr"}
        res = sharpness.rejection_control(
          g_of(direction), x0, state_fn=state_fn, key=key, cond=cond, step_cost=step_cost, **kw_r
        )
        res.x.block_until_ready()
      else:
        res = sharpness.sail(
          g_of(direction), x0, state_fn=state_fn, key=key, cond=cond, project=project, **kw
        )
        res.x.block_until_ready()
    conv = np.asarray(res.converged)
    if arm == "rejection":
      units = np.asarray(res.draws, np.float64)
      extra = {"mean_draws": float(units.mean())}
    else:
      units = step_cost * np.asarray(res.iterations, np.float64) + conv
      extra = sail_stats(res, x0)
    out[arm] = {
      "x": res.x,
      "converged": conv,
      "units": units,
      "seconds": t.seconds,
      "settings": st["record"],
      "kwargs": {
        k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in kw.items()
      },
      "stats": extra,
      "nfe_per_loss": nfe_per_loss,
      "losses": None if arm == "rejection" else np.asarray(res.losses),
    }
  return out


def arm_summary(arm: dict, ratios, mem_c: float, quality: dict | None = None) -> dict:
  """M_c (accepted latents), ||x||²/D (accepted), compute and convergence of one arm."""
  conv = np.asarray(arm["converged"])
  x = np.asarray(arm["x"])
  sq = np.sum(x**2, 1) / x.shape[1]
  r = np.asarray(ratios)
  sel = conv if conv.any() else np.ones_like(conv)
  return {
    "M_c": float(np.mean(r[sel] <= mem_c)),
    "M_c_all": float(np.mean(r <= mem_c)),
    "sq_norm_over_D": float(np.mean(sq[sel])),
    "accepted_fraction": float(conv.mean()),
    "mean_compute_loss_evals": float(np.mean(arm["units"])),
    "mean_compute_network_evals": float(np.mean(arm["units"]) * arm["nfe_per_loss"]),
    "seconds": float(arm["seconds"]),
    "settings": arm["settings"],
    **({"quality": quality} if quality is not None else {}),
    **arm["stats"],
  }


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
