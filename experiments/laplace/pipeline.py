"""Shared pipeline of the Laplace experiments (1D two-point, 2D mixture, images).

MAP by flow matching → :func:`memjax.laplace.fit` (frozen-triple curvature loss + Lanczos) →
for each η, paired samples from every sampler named in ``cfg.posterior.samplers`` (the SAME
tangent velocities ``v`` for all of them, :func:`memjax.laplace.posterior_samples`) → generate
with every sampled model from fixed noise → metrics. A sample that any sampler failed (e.g. a
geodesic that hit its step budget) is counted and excluded for ALL samplers, so the comparison
stays paired; nothing is replaced. The library calls live in ``memjax``; this module only
wires them and collects numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from experiments import common
from memjax import curvature, data, laplace, memorisation, nets, sampling, training

# ``extra_metrics(thetas (S, P), ok (S,), xs (M, D)) -> dict``: experiment-specific numbers of
# the kept models ``thetas[ok]`` whose pooled successful generations are ``xs``.
ExtraMetrics = Callable[[jax.Array, np.ndarray, np.ndarray], dict]

# Samplers of ``laplace.SAMPLERS`` that solve geodesics and take the config's ``geo_*`` options.
GEODESIC_SAMPLERS = ("riemannian", "linearised")


class Evaluator(NamedTuple):
  """Experiment-side functions of a stack of flat subset parameters ``thetas (S, P)``.

  Attributes:
    train: training set ``(N, D)`` in the posterior dtype (reference of the nn ratio).
    heldout_loss: ``thetas -> (S,)`` flow-matching loss on held-out triples.
    batch_loss: ``thetas -> (S,)`` the loss the fit actually uses on its frozen triples (the
      tilted ``L̃`` after :func:`memjax.laplace.tilt`), reported under ``loss_name``.
    memorise: ``(thetas, x0, keep (S,)) -> memorisation.StackMemorisation``: every model of
      the stack generates from ``x0`` (``(N, D)`` shared or ``(S, N, D)`` per model) and the kept
      models' successful samples are pooled (:func:`memjax.memorisation.stack_memorisation`).
    baseline_m_c: ``{c_label: M_c}`` of samples of the TRUE distribution (held-out data) under
      the same criterion against ``train``, reported beside every model's ``M_c``.
  """

  train: jax.Array
  heldout_loss: Callable[[jax.Array], jax.Array]
  batch_loss: Callable[[jax.Array], jax.Array]
  memorise: Callable[..., memorisation.StackMemorisation]
  baseline_m_c: dict | None = None
  loss_name: str = "curvature_loss"


def loss_name(fit) -> str:
  """What ``fit``'s loss is: ``"tilted_curvature_loss"`` (``L̃ = L − g₀ᵀ(θ − θ*)``) or
  ``"curvature_loss"`` (``L``)."""
  tilted = fit.loss is not None and bool(np.any(np.asarray(fit.loss.tilt_grad) != 0))
  return "tilted_curvature_loss" if tilted else "curvature_loss"


# Module-level compiled evaluators of a stack of flat subset parameters: the network ``apply_fn``
# (and the generation settings) are static, the subset's frozen leaves, the triples and the stack
# are traced, so a new fit, seed or subset at the same shapes reuses every program.


@functools.partial(jax.jit, static_argnums=0)
def _heldout_loss(apply_fn, subset, held, thetas):
  return jax.vmap(lambda th: training.fm_loss(apply_fn, subset.merge(th), *held))(thetas)


@functools.partial(jax.jit, static_argnums=0)
def _batch_loss(objective, data, thetas):
  return jax.vmap(lambda th: objective(th, data))(thetas)


def memorise_stack(apply_fn, subset, train, eval_cfg, thetas, x0, keep):
  """Pooled memorisation of the kept models of a stack of flat subset parameters ``thetas``.

  Args:
    apply_fn: ``u(params, x, t)``.
    subset: the :class:`memjax.curvature.ParamSubset` that ``thetas`` belong to.
    train: the training set (reference of the ratio).
    eval_cfg: ``cfg.eval`` (``gen_solver``, ``gen_rtol``, ``gen_atol``, ``cs``).
    thetas: ``(S, P)``.
    x0: noise ``(N, D)`` (shared) or ``(S, N, D)`` (model ``s`` from ``x0[s]``).
    keep: ``(S,)`` bool.

  Returns:
    :class:`memjax.memorisation.StackMemorisation`.
  """
  return memorisation.stack_memorisation(
    apply_fn,
    curvature.merge_stack(subset, thetas),
    x0,
    train,
    eval_cfg.cs,
    keep=keep,
    solver=eval_cfg.gen_solver,
    rtol=eval_cfg.gen_rtol,
    atol=eval_cfg.gen_atol,
  )


def make_evaluator(fit, train, held, eval_cfg, baseline_m_c=None) -> Evaluator:
  """The :class:`Evaluator` of a fit: partial applications of module-level compiled functions.

  Args:
    fit: the :class:`memjax.laplace.LaplaceFit`.
    train: training set ``(N, D)`` in the posterior dtype.
    held: held-out triples ``(x1, x0, t)`` of the held-out FM loss.
    eval_cfg: ``cfg.eval``.
    baseline_m_c: ``{c_label: M_c}`` of true samples.

  Returns:
    :class:`Evaluator`.
  """
  return Evaluator(
    train,
    functools.partial(_heldout_loss, fit.apply_fn, fit.subset, held),
    functools.partial(_batch_loss, fit.objective, fit.loss),
    functools.partial(memorise_stack, fit.apply_fn, fit.subset, train, eval_cfg),
    baseline_m_c,
    loss_name(fit),
  )


class Sweep(NamedTuple):
  """What :func:`run_eta_sweep` returns.

  Attributes:
    rows: one dict per η (results.json); sampler metrics under the sampler's name when at
      least one paired sample was kept.
    map_metrics: the same metrics for the MAP model alone.
    keep: ``{η: {sampler: {"theta": (S_ok, P), "gen": (S_ok, N, D)}}}`` of the kept samples.
    gen_map: the MAP model's generations ``(1, N, D)``.
    trained_metrics: the metrics of the trained parameters before the refinement of ``θ*``.
    velocities: ``{η: v (S, P)}``, the tangent velocities of every η.
    corrections: ``{η: (θ_R − θ_E (S, P), ok (S,))}`` of the first geodesic sampler (if any).
  """

  rows: list
  map_metrics: dict
  keep: dict
  gen_map: np.ndarray
  trained_metrics: dict | None = None
  velocities: dict | None = None
  corrections: dict | None = None


def fit_posterior(apply_fn, params, train, heldout, keys, posterior_cfg, eval_cfg, dtype):
  """Tangent-space fit at the MAP and its :class:`Evaluator` (posterior stage in ``dtype``).

  Args:
    apply_fn: ``u(params, x, t)``.
    params: MAP params pytree.
    train: training set ``(N, D)``; the curvature triples are drawn from it.
    heldout: samples ``(M, D)`` of the TRUE distribution (never the training points): the
      held-out FM loss is computed on triples drawn from them, and their ``M_c`` against
      ``train`` is the baseline of every ``M_c``.
    keys: PRNG keys ``(triples, lanczos, heldout)``: the frozen curvature triples and the
      Lanczos start vector of :func:`memjax.laplace.fit`, and the held-out triples.
    posterior_cfg: ``cfg.posterior`` (``select``, ``num_triples``, ``alpha``, ``loss_scale``,
      ``lanczos_k``, ``lanczos_iters``, ``refine_tol``, ``refine_max_steps``).
    eval_cfg: ``cfg.eval`` (``num_heldout_triples``, ``gen_solver``, ``gen_rtol``,
      ``gen_atol``, ``cs``).
    dtype: float dtype of the posterior stage (params and data are cast to it).

  Returns:
    ``(fit, evaluator, info)``: the :class:`memjax.laplace.LaplaceFit`, the
    :class:`Evaluator` and a dict of plain numbers for results.json.
  """
  k_trip, k_lan, k_held = keys
  pc = posterior_cfg
  params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
  train = jnp.asarray(train, dtype)
  stationary = pc.get("stationary", "refine")
  if stationary not in STATIONARY:
    raise ValueError(f"`posterior.stationary` must be one of {STATIONARY}; got {stationary!r}.")
  refine_tol = (pc.get("refine_tol", None) or None) if stationary == "refine" else None
  scale = resolve_loss_scale(pc.loss_scale, pc.num_triples)
  with common.Timer() as t_lan:
    fit = laplace.fit(
      apply_fn,
      params,
      train,
      k_trip,
      lanczos_key=k_lan,
      select=pc.select or None,
      num_triples=pc.num_triples,
      alpha=pc.alpha,
      loss_scale=scale,
      k=pc.lanczos_k,
      num_iters=pc.get("lanczos_iters", None) or None,
      refine_tol=refine_tol,
      refine_max_steps=int(pc.get("refine_max_steps", 500)),
    )
    jax.block_until_ready(fit.eig)
  alpha_rule = pc.get("alpha_rule", "fixed")
  if alpha_rule not in ALPHA_RULES:
    raise ValueError(f"`posterior.alpha_rule` must be one of {ALPHA_RULES}; got {alpha_rule!r}.")
  prior = None
  evidence_info = {}
  if alpha_rule in ("evidence", "evidence_remainder"):
    # Post hoc, at the trained θ*, before the tilt (the evidence's prior mean is 0: the tilt's
    # implicit prior mean θ* + ∇L_D/α would depend on α itself; see laplace.log_evidence).
    prior = laplace.optimise_prior(fit.eig.values, fit.theta_map)
    evidence_info["alpha_low_rank"] = float(prior.alpha)
    probes = int(pc.get("evidence_probes", 0))
    if alpha_rule == "evidence_remainder" or probes > 0:
      k_rem = jax.random.fold_in(k_lan, 7)
      t_rem, sem = laplace.remainder_trace(fit, k_rem, max(probes, 1))
      rem = laplace.optimise_prior(fit.eig.values, fit.theta_map, remainder_trace=t_rem)
      evidence_info.update(
        remainder_trace=float(t_rem),
        remainder_trace_sem=float(sem),
        remainder_probes=max(probes, 1),
        alpha_with_remainder=float(rem.alpha),
        effective_params_with_remainder=float(rem.effective_params),
      )
      if alpha_rule == "evidence_remainder":
        prior = rem
    fit = laplace.with_prior(fit, prior.alpha)
  if stationary == "tilt":
    fit = tilt(fit)
  heldout = jnp.asarray(heldout, dtype)
  held = curvature.make_triples(k_held, heldout, eval_cfg.num_heldout_triples)
  base = memorisation.summary(memorisation.nn_ratio(heldout, train), eval_cfg.cs)
  evaluator = make_evaluator(fit, train, held, eval_cfg, dict(base["M_c"]))
  heldout_loss = evaluator.heldout_loss
  theta_params = fit.subset.theta
  values = np.asarray(fit.eig.values)
  alpha = float(fit.alpha)
  info = {
    "subset": list(fit.subset.selected_names),
    "num_params": nets.num_params(params),
    "num_subset_params": int(fit.theta_map.shape[0]),
    "lanczos_seconds": t_lan.seconds,
    # Ritz values of the DATA term ∇²L − αI (α enters the tangent Gaussian once).
    "ritz_values": values,
    "ritz_residuals": np.asarray(fit.eig.residuals),
    "posterior_variances_top_k": 1.0 / (np.maximum(values, 0.0) + alpha),
    # E||v||² / η² of the posterior modes: the top-k part and the isotropic complement.
    "tangent_variance_subspace": float(np.sum(1.0 / (np.maximum(values, 0.0) + alpha))),
    "tangent_variance_complement": float((fit.theta_map.shape[0] - values.shape[0]) / alpha),
    "grad_norm_before_refine": float(fit.grad_norm_initial),
    "grad_norm": float(fit.grad_norm),
    "stationary": stationary,
    "refine_tol": refine_tol,
    "loss_scale": float(scale),
    "loss_scale_config": pc.loss_scale,
    "loss_name": evaluator.loss_name,
    "prior_grad_norm": float(alpha * jnp.linalg.norm(fit.theta_map)),
    "refine_displacement": float(jnp.linalg.norm(fit.theta_map - theta_params)),
    "loss_at_map": float(evaluator.batch_loss(fit.theta_map[None])[0]),
    "heldout_fm_loss_map": float(heldout_loss(fit.theta_map[None])[0]),
    "baseline_true_samples": {"num": int(heldout.shape[0]), "memorisation": base},
    "alpha_rule": alpha_rule,
    "alpha": alpha,
    "alpha_config": float(pc.alpha),
    "min_hessian_eigenvalue": float(fit.min_eigenvalue),
    "evidence": evidence_info,
    "log_evidence": {
      "at_alpha": float(laplace.log_evidence(fit.eig.values, fit.theta_map, fit.alpha)),
      "at_alpha_config": float(laplace.log_evidence(fit.eig.values, fit.theta_map, pc.alpha)),
      "effective_params": float(
        np.sum(np.maximum(values, 0.0) / (np.maximum(values, 0.0) + alpha))
      ),
    },
  }
  logging.info(
    "posterior: %d subset params, ||grad L|| %.3g -> %.3g, top data-term Ritz values %s",
    info["num_subset_params"],
    info["grad_norm_before_refine"],
    info["grad_norm"],
    values[:5],
  )
  return fit, evaluator, info


# How θ* is made a stationary point of the frozen loss L (``cfg.posterior.stationary``):
# "refine": L-BFGS on L until ||∇L|| ≤ refine_tol (laplace.fit's refine_tol, moves θ*);
# "tilt": keep the trained θ* and use L̃(θ) = L(θ) − g₀ᵀ(θ − θ*), g₀ = ∇L(θ*): the same Hessian
# (hence the same eigenpairs), ∇L̃(θ*) = 0 exactly, i.e. the Monte-Carlo noise of the triples'
# gradient at θ* is removed instead of being fitted; "none": neither (the old protocol).
STATIONARY = ("refine", "tilt", "none")

# How the prior precision α is chosen (``cfg.posterior.alpha_rule``): "fixed" = ``posterior.alpha``;
# "evidence" = the maximiser of the Laplace evidence (:func:`memjax.laplace.optimise_prior`) at the
# trained θ*, set with :func:`memjax.laplace.with_prior` before the tilt.
# "evidence_remainder" = the same with the P − k directions off the top-k span given their mean
# curvature (Hutchinson, ``posterior.evidence_probes`` probes; laplace.remainder_trace): the
# low-rank α̂ is biased low, this one is an upper end of the full-spectrum α̂
# (laplace.optimise_prior).
ALPHA_RULES = ("fixed", "evidence", "evidence_remainder")

# The data-term scale s of L = s Σ_b ℓ_b + (α/2)||θ||² (``cfg.posterior.loss_scale``): "sum" (s = 1,
# the batch-sum loss of issue 16), "mean" (s = 1/B: the papers' L_FM = E_{x1, x0, t} ℓ is an
# expectation, estimated by the triples' MEAN) or a positive number. The Riemannian metric
# G = I + ∇L∇Lᵀ is not invariant to s: after the tilt the geodesic has constant speed ||v|| and
# |L̃(θ_R) − L̃(θ*)| ≤ ||v||, so s decides how far a geodesic can move in loss.
LOSS_SCALES = ("sum", "mean")


def resolve_loss_scale(value, num_triples: int) -> float:
  """The number ``s`` of a ``posterior.loss_scale`` setting (:data:`LOSS_SCALES` or a number)."""
  if isinstance(value, str):
    if value not in LOSS_SCALES:
      raise ValueError(
        f"`posterior.loss_scale` must be one of {LOSS_SCALES} or a number; got {value!r}."
      )
    return 1.0 if value == "sum" else 1.0 / int(num_triples)
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
    raise ValueError(
      f"`posterior.loss_scale` must be one of {LOSS_SCALES} or a number; got {value!r}."
    )
  if not (np.isfinite(value) and value > 0):
    raise ValueError(f"`posterior.loss_scale` must be finite and > 0; got {value!r}.")
  return float(value)


# The curvature of the LINEARISED sampler's tangent Gaussian (``cfg.posterior.curvature``): "ggn"
# (the data term's generalised Gauss–Newton 2s JᵀJ: Bergamin et al. pair the linearised manifold
# with the GGN Laplace approximation) or "hessian" (the exact data-term Hessian, issue 16's
# pairing). The Euclidean and Riemannian samplers always use the Hessian (the papers'); α is the
# one chosen on the Hessian fit.
CURVATURES = ("hessian", "ggn")


def sampler_fits(fit, posterior_cfg, key) -> dict:
  """``{sampler: fit}``: the GGN fit for ``"linearised"`` when ``posterior.curvature == "ggn"``."""
  kind = posterior_cfg.get("curvature", "hessian")
  if kind not in CURVATURES:
    raise ValueError(f"`posterior.curvature` must be one of {CURVATURES}; got {kind!r}.")
  names = tuple(posterior_cfg.samplers)
  out = {name: fit for name in names}
  if kind == "ggn" and "linearised" in names:
    iters = posterior_cfg.get("lanczos_iters", None) or None
    out["linearised"] = laplace.with_ggn(fit, key, num_iters=iters)
  return out


# The tilt lives in the library (:func:`memjax.laplace.tilt`, which also tilts the linearised loss).
tilt = laplace.tilt


def train_mlp_map(cfg, train, key):
  """MLP MAP by flow matching on ``train`` ``(N, D)``: ``(apply_fn, params, info)``."""
  with common.Timer() as t_map:
    apply_fn, params, losses = common.fit_mlp_cfg(
      train, cfg, key, checkpoint_dir=cfg.train.checkpoint_dir or None
    )
  info = {"train_seconds": t_map.seconds, "final_train_loss": float(np.mean(losses[-100:]))}
  return apply_fn, params, info


def draw_keys(key, d: int):
  """Keys ``(triples, lanczos, heldout)`` of triple draw ``d``: draw 0 uses ``split(key, 3)``;
  draw ``d > 0`` refolds only the triple and Lanczos keys (same held-out set, same MAP)."""
  keys = jax.random.split(key, 3)
  if d == 0:
    return tuple(keys)
  return (jax.random.fold_in(keys[0], d), jax.random.fold_in(keys[1], d), keys[2])


def evaluate_models(ev: Evaluator, thetas, ok, x0, extra_metrics: ExtraMetrics):
  """Metrics of the models ``thetas[ok]`` from a fixed-size stack ``thetas (S, P)``.

  Generation and losses run on the whole stack (static shapes: one compilation for every η
  and sampler); only the rows with ``ok`` enter the numbers. Returns ``(numbers, generated
  samples of the kept models (S_ok, N, D))``.
  """
  ok = np.asarray(ok)
  stack = ev.memorise(thetas, x0, ok)
  out = {
    "num_models": int(ok.sum()),
    "generation_solver": sampling.summarise(
      jax.tree.map(lambda a: np.asarray(a)[ok], stack.result)
    ),
    "heldout_fm_loss": common.stats(np.asarray(ev.heldout_loss(thetas))[ok]),
    ev.loss_name: common.stats(np.asarray(ev.batch_loss(thetas))[ok]),
    "memorisation": with_baseline(stack.summary, ev.baseline_m_c),
  }
  out.update(extra_metrics(thetas, ok, stack.pooled))
  return out, np.asarray(stack.result.x)[ok]


def with_baseline(summary: dict, baseline: dict | None) -> dict:
  """A memorisation summary with the true-sample baseline ``M_c`` beside every ``M_c``
  (``M_c_true_samples``) and the excess ``M_c − baseline`` (``M_c_excess``)."""
  if baseline is None:
    return summary
  excess = {c: summary["M_c"][c] - baseline[c] for c in summary["M_c"]}
  return {**summary, "M_c_true_samples": dict(baseline), "M_c_excess": excess}


def sampler_options(posterior_cfg) -> dict:
  """``{name: options}`` for :func:`memjax.laplace.posterior_samples` from the ``geo_*`` fields."""
  geo = dict(
    solver=posterior_cfg.geo_solver,
    rtol=posterior_cfg.geo_rtol,
    atol=posterior_cfg.geo_atol,
    max_steps=posterior_cfg.geo_max_steps,
  )
  return {name: geo for name in posterior_cfg.samplers if name in GEODESIC_SAMPLERS}


def sampler_diagnostics(fit: laplace.LaplaceFit, samples: laplace.PosteriorSamples) -> dict:
  """Outcome counts of one sampler (plus solver statistics when it reports ``details``)."""
  ok = np.asarray(samples.success)
  out = {"total": int(ok.size), "successful": int(ok.sum()), "failed": int(ok.size - ok.sum())}
  if samples.details is not None:
    res = samples.details
    out.update(laplace.summarise_failures(res))
    out["num_steps"] = common.stats(res.num_steps)
    drift = np.asarray(res.speed_drift)[ok]
    out["speed_drift_max"] = float(np.max(drift)) if ok.any() else None
  out["displacement"] = common.stats(
    jnp.linalg.norm(samples.theta - fit.theta_map[None, :], axis=-1)
  )
  return out


def run_eta_sweep(
  fit: laplace.LaplaceFit, ev: Evaluator, cfg, key, extra_metrics: ExtraMetrics
) -> Sweep:
  """Paired samples of every sampler in ``cfg.posterior.samplers`` for each η of the config.

  The same standard-normal draw is used for every η (and, through
  :func:`memjax.laplace.posterior_samples`, the same ``v`` for every sampler). A sample that
  failed under any sampler is excluded from ALL samplers' metrics (paired); failures are
  counted per sampler in ``row["sampling"]``.
  """
  pc = cfg.posterior
  names = tuple(pc.samplers)
  k_v, k_x0 = jax.random.split(key)
  dtype = fit.theta_map.dtype
  x0 = jax.random.normal(k_x0, (cfg.eval.num_gen, ev.train.shape[1]), dtype)
  options = sampler_options(pc)
  rows, keep, velocities, corrections = [], {}, {}, {}
  geo = [n for n in names if n in GEODESIC_SAMPLERS]
  for eta in tqdm.tqdm(pc.etas, desc="eta sweep", disable=not cfg.progress):
    with common.Timer() as t_samp:
      v, samples = jax.block_until_ready(
        laplace.posterior_samples(
          fit,
          jnp.asarray(eta, dtype),
          k_v,
          pc.num_posterior,
          samplers=names,
          mode=pc.mode,
          options=options,
        )
      )
    diag = {name: sampler_diagnostics(fit, samples[name]) for name in names}
    ok = np.logical_and.reduce([np.asarray(samples[name].success) for name in names])
    excluded = int(ok.size - ok.sum())
    if excluded:
      logging.warning(
        "eta=%g: %d/%d samples failed (%s); excluded from every sampler (paired).",
        eta,
        excluded,
        ok.size,
        {n: d["failed"] for n, d in diag.items()},
      )
    row = {
      "eta": float(eta),
      "paired": {
        "total": int(ok.size),
        "kept": int(ok.sum()),
        "excluded": excluded,
        "seconds": t_samp.seconds,
      },
      "sampling": diag,
      "tangent_norm": common.stats(jnp.linalg.norm(v, axis=-1)),
    }
    velocities[float(eta)] = np.asarray(v)
    if geo and "euclidean" in names:
      corr = np.asarray(samples[geo[0]].theta) - np.asarray(samples["euclidean"].theta)
      corrections[float(eta)] = (corr, ok)
      row["correction_norm_over_tangent_norm"] = (
        common.stats(
          np.linalg.norm(corr, axis=-1)[ok]
          / np.maximum(np.linalg.norm(np.asarray(v), axis=-1)[ok], 1e-300)
        )
        if ok.any()
        else None
      )
    if ok.any():
      keep[float(eta)] = {}
      for name in names:
        row[name], gen = evaluate_models(ev, samples[name].theta, ok, x0, extra_metrics)
        keep[float(eta)][name] = {"theta": np.asarray(samples[name].theta)[ok], "gen": gen}
    logging.info(
      "eta=%g: sampling %.1fs (%d excluded); held-out FM loss %s",
      eta,
      t_samp.seconds,
      excluded,
      {n: row[n]["heldout_fm_loss"]["mean"] for n in names if n in row},
    )
    rows.append(row)
  theta_map_stack = jnp.broadcast_to(fit.theta_map, (pc.num_posterior,) + fit.theta_map.shape)
  one = np.arange(pc.num_posterior) == 0
  map_metrics, gen_map = evaluate_models(ev, theta_map_stack, one, x0, extra_metrics)
  trained = jnp.broadcast_to(fit.subset.theta, theta_map_stack.shape)
  trained_metrics, _ = evaluate_models(ev, trained, one, x0, extra_metrics)
  return Sweep(rows, map_metrics, keep, gen_map, trained_metrics, velocities, corrections)


class Draw(NamedTuple):
  """One frozen-triple draw: its fit, evaluator, fit info and η sweep."""

  fit: laplace.LaplaceFit
  evaluator: Evaluator
  info: dict
  sweep: Sweep


def run_draws(cfg, apply_fn, params, train, heldout, keys, sweep_key, make_extra, dtype):
  """``cfg.posterior.num_triple_draws`` fits of the SAME MAP on different frozen triples, each
  with its own η sweep (same z and x0 keys), plus the agreement of the Riemannian corrections.

  Draw 0 uses ``keys = (triples, lanczos, heldout)`` as given; draw ``d > 0`` folds ``d`` into
  the triple and Lanczos keys (the held-out set is shared). ``make_extra(fit)`` returns the
  experiment's extra metrics of a fit.

  Returns:
    ``(draws, agreement)``: a list of :class:`Draw` and :func:`correction_agreement`'s dict.
  """
  draws = []
  for d in range(int(cfg.posterior.get("num_triple_draws", 1))):
    dkeys = keys if d == 0 else tuple(jax.random.fold_in(k, d) for k in keys[:2]) + keys[2:]
    fit, ev, info = fit_posterior(
      apply_fn, params, train, heldout, dkeys, cfg.posterior, cfg.eval, dtype
    )
    sweep = run_eta_sweep(fit, ev, cfg, sweep_key, make_extra(fit))
    draws.append(Draw(fit, ev, info, sweep))
  return draws, correction_agreement(draws, cfg.posterior)


def _cos(a, b):
  num = np.sum(a * b, axis=-1)
  den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
  return num / np.maximum(den, 1e-300)


def _perp(c, unit):
  """The part of the rows of ``c`` orthogonal to the unit rows ``unit``."""
  return c - np.sum(c * unit, -1, keepdims=True) * unit


def correction_agreement(draws, posterior_cfg) -> dict:
  """Cosine between the Riemannian corrections ``θ_R − θ_E`` of the SAME tangent velocity ``v``
  (draw 0's) under the frozen loss of each other draw (its own refined ``θ*``), per η.

  A correction that is a property of the posterior, not of the Monte-Carlo triples, has
  cosine near 1 across draws. Only samples whose geodesic succeeded in both draws count.
  """
  if len(draws) < 2:
    return {}
  geo = [n for n in posterior_cfg.samplers if n in GEODESIC_SAMPLERS]
  if not geo or not draws[0].sweep.corrections:
    return {}
  options = sampler_options(posterior_cfg)[geo[0]]
  out = []
  for eta, (c0, ok0) in draws[0].sweep.corrections.items():
    v0 = jnp.asarray(draws[0].sweep.velocities[eta])
    row = {"eta": eta, "per_draw": []}
    for d, dr in enumerate(draws[1:], start=1):
      res = laplace.riemannian(dr.fit.objective, dr.fit.theta_map, v0, args=dr.fit.loss, **options)
      cd = np.asarray(res.theta) - np.asarray(dr.fit.theta_map)[None] - np.asarray(v0)
      ok = np.asarray(ok0) & np.asarray(res.success)
      cos = _cos(c0, cd)[ok]
      # The corrections share the −v part whenever the geodesic slows down (θ_R → θ*): the
      # parts orthogonal to v, and the end displacements θ_R − θ*, are compared as well.
      vn = np.asarray(v0) / np.maximum(
        np.linalg.norm(np.asarray(v0), axis=-1, keepdims=True), 1e-300
      )
      cos_perp = _cos(_perp(c0, vn), _perp(cd, vn))[ok]
      cos_disp = _cos(c0 + np.asarray(v0), cd + np.asarray(v0))[ok]
      row["per_draw"].append(
        {
          "draw": d,
          "kept": int(ok.sum()),
          "cosine": common.stats(cos) if ok.any() else None,
          "cosine_min": float(cos.min()) if ok.any() else None,
          "cosine_orthogonal_to_v": common.stats(cos_perp) if ok.any() else None,
          "cosine_displacement": common.stats(cos_disp) if ok.any() else None,
          "correction_along_v": common.stats(
            (np.sum(c0 * vn, -1) / np.maximum(np.linalg.norm(np.asarray(v0), axis=-1), 1e-300))[ok]
          )
          if ok.any()
          else None,
          "norm_ratio": common.stats(
            np.linalg.norm(cd, axis=-1)[ok] / np.maximum(np.linalg.norm(c0, axis=-1)[ok], 1e-300)
          )
          if ok.any()
          else None,
        }
      )
    out.append(row)
  return {"reference_draw": 0, "per_eta": out}


def draws_block(draws, claims_fn) -> list:
  """Per-draw numbers for results.json: the fit info, MAP metrics, sweep rows and claims."""
  return [
    {
      "draw": d,
      "fit": dr.info,
      "map": dr.sweep.map_metrics,
      "trained_params": dr.sweep.trained_metrics,
      "sweep": dr.sweep.rows,
      "claims": claims_fn(dr.sweep.rows),
    }
    for d, dr in enumerate(draws)
  ]


def tradeoff(rows, map_metrics, quality_path, m_path, names) -> list:
  """Memorisation removed per unit of quality lost, per η and sampler:
  ``(M_MAP − M) / (q − q_MAP)`` with ``q`` the metric at ``quality_path`` (higher = worse)."""
  m0, q0 = _get(map_metrics, m_path), _get(map_metrics, quality_path)
  out = []
  for row in rows:
    entry = {"eta": row["eta"]}
    for name in names:
      if name in row:
        dm, dq = m0 - _get(row[name], m_path), _get(row[name], quality_path) - q0
        entry[name] = {"delta_M": dm, "delta_quality": dq, "ratio": dm / dq if dq > 0 else None}
    out.append(entry)
  return out


def _get(d, path):
  for k in path:
    d = d[k]
  return d


def comparison(rows, key_path, baseline: str = "euclidean", candidate: str = "riemannian") -> dict:
  """For each η: the two samplers' values of a nested metric and whether ``candidate`` is lower.

  Args:
    rows: ``Sweep.rows``.
    key_path: path of the metric inside a sampler's row, e.g. ``("heldout_fm_loss", "mean")``
      or ``("memorisation", "M_c", memorisation.c_label(c))``.
    baseline, candidate: sampler names.

  Returns:
    ``{"path", "baseline", "candidate", "per_eta": [{"eta", baseline: value, candidate: value,
    "<candidate>_lower": bool}], "<candidate>_lower_at_all_eta": bool}``.
  """
  lower = f"{candidate}_lower"
  out = []
  for row in rows:
    if baseline not in row or candidate not in row:
      continue
    b, c = _get(row[baseline], key_path), _get(row[candidate], key_path)
    out.append({"eta": row["eta"], baseline: b, candidate: c, lower: bool(c < b)})
  return {
    "path": "/".join(map(str, key_path)),
    "baseline": baseline,
    "candidate": candidate,
    "per_eta": out,
    f"{lower}_at_all_eta": bool(out) and all(o[lower] for o in out),
  }


def claims(rows, paths: dict, compare) -> dict:
  """``{name: comparison(rows, path, *compare)}`` for every ``name: path`` of ``paths``."""
  return {name: comparison(rows, path, *compare) for name, path in paths.items()}


def summarise_claims(claims_: dict) -> str:
  """One line per claim: ``NAME: Candidate lower at all η = ... (η=...: B x / C y, ...)``."""
  lines = []
  for name, claim in claims_.items():
    b, c = claim["baseline"], claim["candidate"]
    vals = ", ".join(
      f"η={o['eta']}: {b[0].upper()} {o[b]:.4g} / {c[0].upper()} {o[c]:.4g}"
      for o in claim["per_eta"]
    )
    lower = claim[f"{c}_lower_at_all_eta"]
    lines.append(f"{name}: {c.capitalize()} lower at all η = {lower} ({vals})")
  return "\n".join(lines)


def label(name: str) -> str:
  """Legend label of a sampler: ``"riemannian"`` -> ``"Riemannian LA"``."""
  return f"{name.capitalize()} LA"


def headline_c(source) -> float:
  """The headline ``c`` (``eval.headline_c``) of a config, or of the config stored in results."""
  cfg = source["config"] if "config" in source else source
  return float(cfg["eval"]["headline_c"])


def m_label(c: float) -> str:
  """Name of ``M_c`` in figures and claims: ``"M_1/3"`` for the papers' c = 1/3."""
  return "M_1/3" if abs(c - 1 / 3) < 1e-12 else f"M_{memorisation.c_label(c)}"


def m_path(c: float) -> tuple:
  """Path of ``M_c`` inside a metrics dict."""
  return ("memorisation", "M_c", memorisation.c_label(c))


def m_c(metrics: dict, c: float) -> float:
  """``M_c`` of a metrics dict (``metrics["memorisation"]["M_c"]`` keyed by ``c_label(c)``)."""
  return metrics["memorisation"]["M_c"][memorisation.c_label(c)]


def field_grid(apply_fn, subset, thetas, xs, ts):
  """``u_θs(x, t)`` on a grid for a stack of flat ``thetas``: returns ``(S, T, X)`` (1D fields)."""
  return np.asarray(_field_grid(apply_fn, subset, thetas, xs, ts))


@functools.partial(jax.jit, static_argnums=0)
def _field_grid(apply_fn, subset, thetas, xs, ts):
  tt, xx = jnp.meshgrid(ts, xs, indexing="ij")
  x, t = xx.reshape(-1, 1), tt.reshape(-1)
  return jax.vmap(lambda th: apply_fn(subset.merge(th), x, t)[:, 0].reshape(tt.shape))(thetas)


def target_log_prob_fn(gmm):
  """``x (G,) -> log p(x)`` of a 1D mixture (for :func:`memjax.metrics.kl_to_target_1d`)."""
  return lambda x: data.mixture_log_prob(gmm, jnp.reshape(x, (-1, gmm.dim)))


MARKERS = "osd^v<>"  # one per sampler, in the order of cfg.posterior.samplers


def eta_panel(a, rows, map_metrics, names, title, metric, label=label, eta_ticks=True):
  """``metric(sampler metrics)`` against η (log axis) for every sampler of ``names`` (its kept
  rows of ``Sweep.rows``), the MAP's value dotted; ``eta_ticks``: a tick at every η."""
  for name, marker in zip(names, MARKERS):
    kept = [r for r in rows if name in r]
    a.plot(
      [r["eta"] for r in kept], [metric(r[name]) for r in kept], marker + "-", label=label(name)
    )
  a.axhline(metric(map_metrics), color="k", ls=":", label="MAP")
  a.set(xscale="log", xlabel="η", title=title)
  if eta_ticks:
    etas = [r["eta"] for r in rows]
    a.set_xticks(etas, [f"{e:g}" for e in etas], minor=False)
    a.minorticks_off()


def draw_and_claim_lines(results: dict, detail=lambda fit: "") -> list[str]:
  """Summary lines shared by the toys: ||∇L|| per triple draw, the claims, the agreement."""
  lines = []
  for d in results["draws"]:
    f = d["fit"]
    lines.append(
      f"draw {d['draw']}: ||grad L|| {f['grad_norm_before_refine']:.3g} -> {f['grad_norm']:.3g}"
      + detail(f)
    )
  lines.append(summarise_claims(results["claims"]))
  for row in results.get("correction_agreement", {}).get("per_eta", []):
    cos = [p["cosine"]["mean"] for p in row["per_draw"] if p["cosine"]]
    lines.append(f"η={row['eta']:g}: cos(θ_R − θ_E) across draws {cos}")
  return lines


def results_block(cfg, notes: dict, map_info: dict, draws, agreement, claims_fn) -> dict:
  """The results every toy writes: config, metric notes, MAP, sweep, claims, trade-off, draws."""
  sweep = draws[0].sweep
  names = tuple(cfg.posterior.samplers)
  hl, m13 = ("heldout_fm_loss", "mean"), m_path(cfg.eval.headline_c)
  return {
    "config": cfg.to_dict(),
    "metric_notes": notes,
    "map": {**map_info, **draws[0].info, **sweep.map_metrics},
    "sweep": sweep.rows,
    "claims": claims_fn(sweep.rows),
    "tradeoff": tradeoff(sweep.rows, sweep.map_metrics, hl, m13, names),
    "draws": draws_block(draws, claims_fn),
    "correction_agreement": agreement,
  }
