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
GEODESIC_SAMPLERS = ("riemannian",)


class Evaluator(NamedTuple):
  """Experiment-side functions of a stack of flat subset parameters ``thetas (S, P)``.

  Attributes:
    train: training set ``(N, D)`` in the posterior dtype (reference of the nn ratio).
    heldout_loss: ``thetas -> (S,)`` flow-matching loss on held-out triples.
    batch_loss: ``thetas -> (S,)`` curvature loss ``L`` on the frozen triples of the fit.
    generate: ``(thetas, x0 (N, D)) -> sampling.SampleResult`` with fields ``(S, N, ...)``,
      the same noise for every model.
  """

  train: jax.Array
  heldout_loss: Callable[[jax.Array], jax.Array]
  batch_loss: Callable[[jax.Array], jax.Array]
  generate: Callable[[jax.Array, jax.Array], sampling.SampleResult]


class Sweep(NamedTuple):
  """What :func:`run_eta_sweep` returns.

  Attributes:
    rows: one dict per η (results.json); sampler metrics under the sampler's name when at
      least one paired sample was kept.
    map_metrics: the same metrics for the MAP model alone.
    keep: ``{η: {sampler: {"theta": (S_ok, P), "gen": (S_ok, N, D)}}}`` of the kept samples.
    gen_map: the MAP model's generations ``(1, N, D)``.
  """

  rows: list
  map_metrics: dict
  keep: dict
  gen_map: np.ndarray


def fit_posterior(apply_fn, params, train, heldout, keys, posterior_cfg, eval_cfg, dtype):
  """Tangent-space fit at the MAP and its :class:`Evaluator` (posterior stage in ``dtype``).

  Args:
    apply_fn: ``u(params, x, t)``.
    params: MAP params pytree.
    train: training set ``(N, D)``; the curvature triples are drawn from it.
    heldout: data ``(M, D)`` for the held-out triples (``train`` itself for the toys).
    keys: PRNG keys ``(triples, lanczos, heldout)``: the frozen curvature triples and the
      Lanczos start vector of :func:`memjax.laplace.fit`, and the held-out triples.
    posterior_cfg: ``cfg.posterior`` (``select``, ``num_triples``, ``alpha``, ``loss_scale``,
      ``lanczos_k``).
    eval_cfg: ``cfg.eval`` (``num_heldout_triples``, ``gen_solver``, ``gen_rtol``,
      ``gen_atol``).
    dtype: float dtype of the posterior stage (params and data are cast to it).

  Returns:
    ``(fit, evaluator, info)``: the :class:`memjax.laplace.LaplaceFit`, the
    :class:`Evaluator` and a dict of plain numbers for results.json.
  """
  k_trip, k_lan, k_held = keys
  params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
  train = jnp.asarray(train, dtype)
  with common.Timer() as t_lan:
    fit = laplace.fit(
      apply_fn,
      params,
      train,
      k_trip,
      lanczos_key=k_lan,
      select=posterior_cfg.select or None,
      num_triples=posterior_cfg.num_triples,
      alpha=posterior_cfg.alpha,
      loss_scale=posterior_cfg.loss_scale,
      k=posterior_cfg.lanczos_k,
    )
    jax.block_until_ready(fit.eig)
  held = curvature.make_triples(k_held, jnp.asarray(heldout, dtype), eval_cfg.num_heldout_triples)
  merge = fit.subset.merge

  @jax.jit
  def heldout_loss(thetas):
    return jax.vmap(lambda th: training.fm_loss(fit.apply_fn, merge(th), *held))(thetas)

  @jax.jit
  def generate(thetas, x0):
    return sampling.generate_multi(
      fit.apply_fn,
      jax.vmap(merge)(thetas),
      x0,
      solver=eval_cfg.gen_solver,
      rtol=eval_cfg.gen_rtol,
      atol=eval_cfg.gen_atol,
    )

  evaluator = Evaluator(train, heldout_loss, jax.jit(jax.vmap(fit.loss_fn)), generate)
  info = {
    "subset": list(fit.subset.selected_names),
    "num_params": nets.num_params(params),
    "num_subset_params": int(fit.theta_map.shape[0]),
    "lanczos_seconds": t_lan.seconds,
    "ritz_values": np.asarray(fit.eig.values),
    "ritz_residuals": np.asarray(fit.eig.residuals),
    "loss_at_map": float(fit.loss_fn(fit.theta_map)),
    "heldout_fm_loss_map": float(heldout_loss(fit.theta_map[None])[0]),
  }
  logging.info(
    "posterior: %d subset params, top Ritz values %s",
    info["num_subset_params"],
    np.asarray(fit.eig.values[:5]),
  )
  return fit, evaluator, info


def build_posterior(cfg, train, key):
  """MLP MAP by flow matching on ``train`` ``(N, D)``, then :func:`fit_posterior` in float64.

  The held-out triples of the toys are fresh (noise, time) draws on the training points.
  Returns ``(fit, evaluator, info)``.
  """
  k_map, *keys = jax.random.split(key, 4)
  with common.Timer() as t_map:
    apply_fn, params, losses = common.fit_mlp_cfg(
      train, cfg, k_map, checkpoint_dir=cfg.train.checkpoint_dir or None
    )
  fit, ev, info = fit_posterior(
    apply_fn, params, train, train, keys, cfg.posterior, cfg.eval, jnp.float64
  )
  info = {"train_seconds": t_map.seconds, "final_train_loss": float(np.mean(losses[-100:])), **info}
  return fit, ev, info


def evaluate_models(ev: Evaluator, thetas, ok, x0, cs, extra_metrics: ExtraMetrics):
  """Metrics of the models ``thetas[ok]`` from a fixed-size stack ``thetas (S, P)``.

  Generation and losses run on the whole stack (static shapes: one compilation for every η
  and sampler); only the rows with ``ok`` enter the numbers. Returns ``(numbers, generated
  samples of the kept models (S_ok, N, D))``.
  """
  gen = ev.generate(thetas, x0)
  ok = np.asarray(ok)
  gen_ok = np.asarray(gen.success)[ok]
  xs_models = np.asarray(gen.x)[ok]
  xs = xs_models[gen_ok]  # pooled successful samples (M, D)
  r = memorisation.nn_ratio(jnp.asarray(xs), ev.train)
  out = {
    "num_models": int(ok.sum()),
    "generation_solver": sampling.summarise(jax.tree.map(lambda a: np.asarray(a)[ok], gen)),
    "heldout_fm_loss": common.stats(np.asarray(ev.heldout_loss(thetas))[ok]),
    "curvature_loss": common.stats(np.asarray(ev.batch_loss(thetas))[ok]),
    "memorisation": memorisation.summary(r, cs),
  }
  out.update(extra_metrics(thetas, ok, xs))
  return out, xs_models


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
  sample = jax.jit(
    lambda eta: laplace.posterior_samples(
      fit, eta, k_v, pc.num_posterior, samplers=names, mode=pc.mode, options=options
    )
  )
  rows, keep = [], {}
  for eta in tqdm.tqdm(pc.etas, desc="eta sweep", disable=not cfg.progress):
    with common.Timer() as t_samp:
      v, samples = jax.block_until_ready(sample(jnp.asarray(eta, dtype)))
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
    if ok.any():
      keep[float(eta)] = {}
      for name in names:
        row[name], gen = evaluate_models(
          ev, samples[name].theta, ok, x0, cfg.eval.cs, extra_metrics
        )
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
  map_metrics, gen_map = evaluate_models(ev, theta_map_stack, one, x0, cfg.eval.cs, extra_metrics)
  return Sweep(rows, map_metrics, keep, gen_map)


def _get(d, path):
  for k in path:
    d = d[k]
  return d


def comparison(rows, key_path, baseline: str = "euclidean", candidate: str = "riemannian") -> dict:
  """For each η: the two samplers' values of a nested metric and whether ``candidate`` is lower.

  Args:
    rows: ``Sweep.rows``.
    key_path: path of the metric inside a sampler's row, e.g. ``("heldout_fm_loss", "mean")``
      or ``("memorisation", "M_c", memorisation.c_label(1 / 3))``.
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


def m_c(metrics: dict, c: float = 1 / 3) -> float:
  """``M_c`` of a metrics dict (``metrics["memorisation"]["M_c"]`` keyed by ``c_label(c)``)."""
  return metrics["memorisation"]["M_c"][memorisation.c_label(c)]


def field_grid(apply_fn, subset, thetas, xs, ts):
  """``u_θs(x, t)`` on a grid for a stack of flat ``thetas``: returns ``(S, T, X)`` (1D fields)."""
  tt, xx = jnp.meshgrid(ts, xs, indexing="ij")
  x, t = xx.reshape(-1, 1), tt.reshape(-1)
  f = jax.vmap(lambda th: apply_fn(subset.merge(th), x, t)[:, 0].reshape(tt.shape))
  return np.asarray(f(thetas))


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
