r"""The audit's lenses: one trained field, four views of memorisation, one summary.

:func:`run` generates samples from fixed noise and looks at each of them through

* **memorisation** (:mod:`memjax.memorisation`): nearest and second-nearest training point,
  ``r = d1²/d2²`` and the label ``r ≤ c`` at every ``c`` of the grid;
* **LID** (:mod:`memjax.lid`): the FLIPD curve over a grid of ``t0``, its Kneedle knee, FLIPD
  at the knee (Hutchinson with its standard error, or the exact trace for small ``D``), ``LID*``
  of the nearest training point by local PCA and the manifold-memorisation (MMH) labels;
* **sharpness** (:mod:`memjax.sharpness`): ``−tr ∇ₓs`` and ``||s||²`` at the detector times, at
  the sampler's state reached from the same noise; with a class-conditional model also Wen et
  al.'s ``||ε̂(x, c) − ε̂(x, ∅)||`` and ``||H^Δ s^Δ||²``;
* **noise regimes** (:mod:`memjax.regimes`, on the training set): posterior concentration
  ``W_σ``, shell coverage ``C_σ`` of held-out points, the danger zone, and how close the model's
  denoiser is to the memorising optimum ``D*`` per σ;
* optionally the **weight space** (:mod:`memjax.laplace`): ``M_c`` of the same noise under
  Euclidean and Riemannian Laplace samples of the weights at one ``η``.

The summary scores every detector against the ratio labels (AUROC and TPR at 1 % FPR,
:func:`memjax.metrics.detection_report`), counts the MMH classes and states the danger zone.
Samples whose solve failed are reported with their diffrax result code and left out of every
score (never replaced).

References:
  Ross et al., "A Geometric Framework for Understanding Memorization in Generative Models",
  arXiv:2411.00113. Jeon et al., "Understanding and Mitigating Memorization in Generative Models
  via Sharpness of Probability Landscapes", arXiv:2412.04140. "Two Calm Ends and the Wild
  Middle: A Geometric Picture of Memorization in Diffusion Models", arXiv:2602.17846.
  "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
  arXiv:2602.00199.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from memjax import (
  _checks,
  curvature,
  denoisers,
  distributed,
  laplace,
  lid,
  memorisation,
  metrics,
  neighbours,
  paths,
  regimes,
  sampling,
  sharpness,
)
from memjax.audit.model import Model

# ---------------------------------------------------------------------------
# Results, one NamedTuple per lens.


class Generation(NamedTuple):
  """Samples from fixed noise with the solver's per-sample outcome."""

  noise: np.ndarray  # (N, D) the noise x(t_noise)
  samples: np.ndarray  # (N, D) endpoints at the data end
  result: np.ndarray  # (N,) diffrax result codes (0 = successful)
  num_steps: np.ndarray  # (N,) solver steps
  ok: np.ndarray  # (N,) bool: successful and finite (the samples every lens scores)
  labels: np.ndarray | None  # (N,) class labels of a conditional model
  summary: dict  # memjax.sampling.summarise


class Memorisation(NamedTuple):
  """Nearest-neighbour ratio of each sample against the distinct training points."""

  nearest: np.ndarray  # (N,) index into the training set of the nearest point
  second: np.ndarray  # (N,) index of the second-nearest distinct point
  d1: np.ndarray  # (N,)
  d2: np.ndarray  # (N,)
  ratio: np.ndarray  # (N,) r = d1² / d2²
  memorised: dict  # {c_label(c): (N,) bool}, r ≤ c
  m_c: dict  # {c_label(c): M_c over the scored samples}
  c: float  # the headline threshold (labels of the summary)


class Lid(NamedTuple):
  """FLIPD curve, knee, FLIPD at the knee, LID* and MMH labels."""

  t0s: np.ndarray  # (T,) times of the curve, increasing noise
  noise_to_signal: np.ndarray  # (T,) σ/ψ of those times
  curve: np.ndarray  # (T, N) FLIPD at each t0
  knee: int  # index of the knee in t0s
  t0: float  # the knee time
  flipd: np.ndarray  # (N,) FLIPD at t0
  sem: np.ndarray  # (N,) its standard error (0 when exact)
  exact: bool  # exact trace (small D) or Hutchinson
  lid_star: np.ndarray  # (N,) local-PCA LID* of the nearest training point
  mmh: np.ndarray  # (N,) memjax.lid MMH class (0 not memorised, 1 OD, 2 DD, 3 other)
  mmh_counts: dict  # {name: count} over the scored samples


class Sharpness(NamedTuple):
  """``−tr ∇s`` and ``||s||²`` at each detector time (sampler states from the same noise)."""

  names: tuple  # (K,) names of the detector times
  times: np.ndarray  # (K,)
  noise_to_signal: np.ndarray  # (K,)
  neg_trace: np.ndarray  # (K, N) −tr ∇ₓ s
  trace_sem: np.ndarray  # (K, N) standard error of the trace (0 when exact)
  score_sq: np.ndarray  # (K, N) ||s||²


class Guidance(NamedTuple):
  """Classifier-free-guidance detectors at the first detector time (conditional models)."""

  time: float
  wen: np.ndarray  # (N,) ||ε̂(x, t, c) − ε̂(x, t, ∅)||
  hs: np.ndarray  # (N,) ||H^Δ s^Δ||²


class Regimes(NamedTuple):
  """Noise regimes of the training set and the model's distance to ``D*`` per σ."""

  sigmas: np.ndarray  # (S,) VE noise levels σ/ψ
  max_weight: np.ndarray  # (S,) W_σ
  n_eff: np.ndarray  # (S,) E exp H
  coverage: np.ndarray  # (S,) C_σ of held-out points (NaN without held-out data)
  boundaries: dict  # memjax.regimes.regime_boundaries (+ "rough" guesses)
  rel_dist: np.ndarray  # (S,) E||D_θ − D*|| / E||D* − D_lin||
  alignment: np.ndarray  # (S,) 1: D_θ behaves like D*, 0: like D_lin


class WeightSpace(NamedTuple):
  """M_c of the same noise under Laplace samples of the weights at one η."""

  eta: float
  m_c: dict  # {sampler: {c_label: M_c pooled over the successful posterior samples}}
  per_sample: dict  # {sampler: (N,) fraction of posterior samples whose sample is memorised}
  num_ok: dict  # {sampler: successful posterior samples}
  num_total: int
  grad_norm: float  # ||∇L(θ*)|| of the curvature loss at the θ* used


class AuditReport(NamedTuple):
  """Everything :func:`run` found; ``summary`` is the JSON-able headline."""

  model: dict
  generation: Generation
  memorisation: Memorisation
  lid: Lid | None
  sharpness: Sharpness | None
  guidance: Guidance | None
  regimes: Regimes | None
  weight_space: WeightSpace | None
  control: Control | None  # held-out real points through the same lenses
  detectors: dict  # {name: (N,) score, larger = more likely memorised}
  summary: dict
  train: np.ndarray  # the training points (for the report's nearest-image grid)


# ---------------------------------------------------------------------------
# Compiled pieces (module level: one program per field and setting, reused across calls).


def _tau_velocity(velocity, t_start, t_end, params, x, tau):
  """``dx/dτ`` for ``t = t_start + τ (t_end − t_start)``, ``τ ∈ [0, 1]`` (any time direction)."""
  t = t_start + tau * (t_end - t_start)
  return (t_end - t_start) * velocity(params, x, t)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _sharpness_jit(score_fn, settings, mesh, xs, t, key):
  num_probes, chunk = settings

  def one(x, k):
    tr, sem = sharpness.hessian_trace(score_fn, x, t, k, num_probes, chunk)
    return -tr, sem, sharpness.score_norm_sq(score_fn, x, t)

  keys = jax.random.split(key, xs.shape[0])
  return distributed.map_rows(jax.vmap(one), xs, keys, mesh=mesh)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _guidance_jit(eps_fn, score_fn, null, xs, t, labels):
  def one(x, c):
    return (
      sharpness.wen_metric(eps_fn, x, t, c, null),
      sharpness.hs_detector(score_fn, x, t, c, null),
    )

  return jax.vmap(one)(xs, labels)


def _sigma_to_t(schedule, sigma):
  if schedule is paths.linear_fm():
    return paths.fm_sigma_to_t(sigma)
  return paths.time_at_noise_to_signal(schedule, sigma)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _denoise_jit(apply_fn, schedule, parameterisation, params, y, sigma):
  sigma_to_t = functools.partial(_sigma_to_t, schedule)
  return denoisers.schedule_denoiser(apply_fn, params, schedule, sigma_to_t, parameterisation)(
    y, sigma
  )


# ---------------------------------------------------------------------------
# Lenses.


def time_span(model: Model, margin: float):
  """``(t_start, t_end)``: noise end to data end, pulled in by ``margin`` of the span for
  non-velocity outputs (their conversion to a velocity divides by ψ or σ at the ends)."""
  s = model.schedule
  t_start, t_end = float(s.t_noise), float(s.t_data)
  if model.parameterisation != "velocity":
    h = margin * (t_end - t_start)
    t_start, t_end = t_start + h, t_end - h
  return t_start, t_end


def _solve(model: Model, noise, labels, tau_end, scfg, mesh):
  """Sampler states at ``τ = tau_end`` (1: the data end) from ``noise``; a SampleResult."""
  t_start, t_end = time_span(model, scfg.t_margin)
  vel = model.velocity
  if (t_start, t_end) != (0.0, 1.0):
    vel = model.__dict__.setdefault("_tau_velocity", {}).setdefault(
      (t_start, t_end), functools.partial(_tau_velocity, model.velocity, t_start, t_end)
    )
  kw = dict(
    solver=scfg.solver,
    t1=float(tau_end),
    rtol=scfg.rtol,
    atol=scfg.atol,
    max_steps=scfg.max_steps,
    mesh=mesh,
  )
  if model.cond is None:
    return sampling.generate(vel, model.params, noise, **kw)
  parts = []
  for c in np.unique(labels):
    rows = np.flatnonzero(labels == c)
    res = sampling.generate(vel, (model.params, jnp.asarray(c, jnp.int32)), noise[rows], **kw)
    parts.append((rows, res))
  out = [np.zeros((len(noise),) + np.shape(f)[1:], np.asarray(f).dtype) for f in parts[0][1]]
  for rows, res in parts:
    for o, f in zip(out, res):
      o[rows] = np.asarray(f)
  return sampling.SampleResult(*out)


def generate(model: Model, key, scfg, mesh=None) -> Generation:
  """Samples of ``scfg.num_samples`` fixed noise draws ``x(t_noise) = σ(t_noise) z``."""
  t_start, _ = time_span(model, scfg.t_margin)
  sig = float(model.schedule.sigma(jnp.asarray(t_start, jnp.float32)))
  z = jax.random.normal(key, (int(scfg.num_samples), model.dim), model.dtype)
  noise = sig * z
  labels = None
  if model.cond is not None:
    c = model.cond
    labels = (
      np.resize(np.arange(c.num_classes), len(noise))
      if c.labels is None
      else np.asarray(c.labels, np.int32)
    )
    if labels.shape != (len(noise),):
      raise ValueError(f"`cond.labels` must have shape ({len(noise)},); got {labels.shape}.")
  res = _solve(model, noise, labels, 1.0, scfg, mesh)
  x = np.asarray(res.x)
  ok = (np.asarray(res.result) == 0) & np.all(np.isfinite(x), axis=1)
  return Generation(
    np.asarray(noise),
    x,
    np.asarray(res.result),
    np.asarray(res.num_steps),
    ok,
    labels,
    sampling.summarise(res),
  )


def _scatter(values, ok, fill=np.nan):
  """Rows of ``values`` (one per scored sample) placed back at ``ok``; ``fill`` elsewhere."""
  values = np.asarray(values)
  out = np.full((ok.shape[0],) + values.shape[1:], fill, np.result_type(values, type(fill)))
  out[ok] = values
  return out


def memorisation_lens(samples, ok, train, mcfg, mesh=None) -> Memorisation:
  """Ratio ``r = d1²/d2²`` of each scored sample against the distinct training points."""
  flat = np.asarray(train).reshape(len(train), -1)
  _, first = np.unique(flat, axis=0, return_index=True)
  first = np.sort(first)
  if len(first) < 2:
    raise ValueError(f"`train` must hold at least 2 distinct points; got {len(first)}.")
  nn = neighbours.nearest_two(
    jnp.asarray(samples[ok]), jnp.asarray(flat[first]), mesh=mesh, names=("samples", "train")
  )
  r = np.asarray(memorisation.ratio_from_nearest(nn))
  cs = memorisation.check_cs(tuple(mcfg.cs) + (mcfg.c,))
  m = np.asarray(memorisation.memorised_fraction(jnp.asarray(r), cs))
  return Memorisation(
    _scatter(first[np.asarray(nn.i1)], ok, -1),
    _scatter(first[np.asarray(nn.i2)], ok, -1),
    _scatter(nn.d1, ok),
    _scatter(nn.d2, ok),
    _scatter(r, ok),
    {memorisation.c_label(c): _scatter(r <= c, ok, False) for c in cs},
    {memorisation.c_label(c): float(v) for c, v in zip(cs, m)},
    float(mcfg.c),
  )


_time_at_noise_to_signal = jax.jit(paths.time_at_noise_to_signal, static_argnums=(0, 2))


def _times(schedule, ratios, dtype):
  """Times of ``schedule`` at the noise-to-signal ratios ``σ/ψ`` (ascending noise)."""
  return np.asarray(_time_at_noise_to_signal(schedule, jnp.asarray(ratios, dtype), 100))


def lid_lens(
  model: Model, samples, ok, train, mem: Memorisation, key, lcfg, mesh=None, tick=None
) -> Lid:
  """FLIPD curve and knee, FLIPD at the knee with its SEM, LID* and the MMH labels.

  ``tick()`` is called after each of the three steps (progress bars).
  """
  tick = tick or (lambda: None)
  x = jnp.asarray(samples[ok], model.dtype)
  exact = model.dim <= lcfg.exact_max_dim
  opts = dict(
    parameterisation=model.parameterisation,
    key=key,
    n_probes=None if exact else int(lcfg.num_probes),
    batch_size=int(lcfg.batch_size) if lcfg.batch_size else None,
    mesh=mesh,
  )
  ratios = np.geomspace(*lcfg.noise_to_signal_range, int(lcfg.num_t0))
  t0s = _times(model.schedule, ratios, model.dtype)
  curve = np.asarray(lid.flipd_curve(model.field, x, jnp.asarray(t0s), model.schedule, **opts))
  t0, knee = lid.auto_t0(jnp.asarray(t0s), jnp.asarray(curve), model.schedule)
  t0 = float(t0)
  tick()
  det = lid.flipd_details(model.field, x, t0, model.schedule, **opts)
  tick()
  k = max(2, min(int(lcfg.lpca_k), len(train)))
  star = np.asarray(
    lid.lpca(jnp.asarray(train), k, queries=x, threshold=float(lcfg.lpca_threshold)), np.float64
  )
  tick()
  memd = jnp.asarray(mem.memorised[memorisation.c_label(mem.c)][ok])
  flipd = np.asarray(det.lid)
  labels = np.asarray(
    lid.mmh_labels(
      jnp.asarray(flipd),
      jnp.asarray(star, flipd.dtype),
      memd,
      tol=float(lcfg.mmh_tol),
      dd_max_lid=float(lcfg.dd_max_lid),
    )
  )
  return Lid(
    t0s,
    ratios,
    np.stack([_scatter(c, ok) for c in curve]),
    int(knee),
    t0,
    _scatter(flipd, ok),
    _scatter(det.sem, ok),
    bool(exact),
    _scatter(star, ok),
    _scatter(labels, ok, -1),
    lid.mmh_counts(labels),
  )


def detector_times(model: Model, knee_t0: float | None, scfg) -> tuple[tuple, np.ndarray]:
  """``(names, times)``: the FLIPD knee (when known) and the configured σ/ψ ratios."""
  names, times = [], []
  if knee_t0 is not None and scfg.at_knee:
    names.append("knee")
    times.append(knee_t0)
  for ratio in scfg.noise_to_signal:
    names.append(f"nsr{float(ratio):g}")
    times.append(float(_times(model.schedule, [ratio], model.dtype)[0]))
  return tuple(names), np.asarray(times, np.float64)


def _states_at(model, gen: Generation, t, scfg, mesh):
  """The sampler's states at time ``t`` from the generation noise (scored rows only)."""
  t_start, t_end = time_span(model, scfg.t_margin)
  tau = (t - t_start) / (t_end - t_start)
  labels = None if gen.labels is None else gen.labels[gen.ok]
  res = _solve(model, gen.noise[gen.ok], labels, tau, scfg, mesh)
  return np.asarray(res.x), np.asarray(res.result)


def _sharp_scores(model: Model, xs, labels, t, key, settings, mesh):
  """``(−tr ∇s, its sem, ||s||²)`` at the points ``xs`` (rows with non-finite values: NaN)."""
  good = np.all(np.isfinite(xs), axis=1)
  out = [np.full(len(xs), np.nan) for _ in range(3)]
  groups = [(None, good)]
  if model.cond is not None:
    groups = [(int(c), good & (labels == c)) for c in np.unique(labels)]
  for label, sel in groups:
    if sel.any():
      res = _sharpness_jit(
        model.point("score", label),
        settings,
        mesh,
        jnp.asarray(xs[sel]),
        jnp.asarray(t, model.dtype),
        key,
      )
      for o, r in zip(out, res):
        o[sel] = np.asarray(r)
  return out


def _knee_points(model: Model, x, t):
  """``ψ(t) x``: the clean points rescaled to time ``t`` (where FLIPD evaluates)."""
  return np.asarray(model.schedule.psi(jnp.asarray(t, model.dtype))) * np.asarray(x)


def sharpness_lens(
  model: Model, gen: Generation, names, times, key, hcfg, scfg, mesh=None, tick=None
):
  """``−tr ∇s`` (Hutchinson, exact for small D) and ``||s||²`` at each detector time.

  At the knee the field is evaluated at the clean sample rescaled, ``ψ(t0) x̂`` (where FLIPD
  looks, so held-out data can be scored alike); at the σ/ψ times at the sampler's state reached
  from the same noise (the sharpness papers' protocol). A conditional model also gets the
  guidance detectors at the first σ/ψ time (else at the knee).

  Returns ``(Sharpness, Guidance | None)``; ``tick()`` is called after each time.
  """
  tick = tick or (lambda: None)
  ok = gen.ok
  exact = model.dim <= hcfg.exact_max_dim
  settings = (None if exact else int(hcfg.num_probes), int(hcfg.chunk_size))
  labels = None if gen.labels is None else gen.labels[ok]
  rows = {"neg_trace": [], "sem": [], "score_sq": []}
  guidance = None
  for i, t in enumerate(times):
    if names[i] == "knee":
      xs = _knee_points(model, gen.samples[ok], t)
    else:
      xs, codes = _states_at(model, gen, t, scfg, mesh)
      xs = np.where((codes == 0)[:, None], xs, np.nan)
    out = _sharp_scores(model, xs, labels, t, jax.random.fold_in(key, i), settings, mesh)
    for name, o in zip(rows, out):
      rows[name].append(_scatter(o, ok))
    if model.cond is not None and guidance is None and (names[i] != "knee" or i == len(times) - 1):
      good = np.all(np.isfinite(xs), axis=1)
      wen, hs = (np.full(len(xs), np.nan) for _ in range(2))
      if good.any():
        w, h = _guidance_jit(
          model.point_cond("eps"),
          model.point_cond("score"),
          int(model.cond.null_label),
          jnp.asarray(xs[good]),
          jnp.asarray(t, model.dtype),
          jnp.asarray(labels[good], jnp.int32),
        )
        wen[good], hs[good] = np.asarray(w), np.asarray(h)
      guidance = Guidance(float(t), _scatter(wen, ok), _scatter(hs, ok))
    tick()
  ratios = np.asarray(paths.noise_to_signal(model.schedule, jnp.asarray(times)))
  sharp = Sharpness(
    tuple(names),
    np.asarray(times),
    ratios,
    np.stack(rows["neg_trace"]),
    np.stack(rows["sem"]),
    np.stack(rows["score_sq"]),
  )
  return sharp, guidance


class Control(NamedTuple):
  """Held-out real points through the same lenses: what genuine data scores.

  ``ratio`` gives the chance floor of the criterion (``m_c``: M_c of real data); ``detectors``
  holds the detectors that need no sampler state (FLIPD and LID* at the knee, sharpness at the
  knee), the reference negatives of :func:`summarise`'s ``detection_vs_held_out``.
  """

  ratio: np.ndarray  # (M,)
  m_c: dict  # {c_label: M_c of held-out points}
  detectors: dict  # {name: (M,) score}


def control_lens(model: Model, held_out, train, lid_res, key, cfg, mesh=None) -> Control:
  """The memorisation ratio and the knee detectors of (up to ``num_samples``) held-out points."""
  held = np.asarray(held_out)[: int(cfg.sample.num_samples)]
  ok = np.ones(len(held), bool)
  mem = memorisation_lens(held, ok, train, cfg.memorisation, mesh)
  dets = {}
  if lid_res is not None and model.cond is None:
    x = jnp.asarray(held, model.dtype)
    opts = dict(
      parameterisation=model.parameterisation,
      key=key,
      n_probes=None if lid_res.exact else int(cfg.lid.num_probes),
      batch_size=int(cfg.lid.batch_size) if cfg.lid.batch_size else None,
      mesh=mesh,
    )
    flipd = np.asarray(lid.flipd(model.field, x, lid_res.t0, model.schedule, **opts))
    k = max(2, min(int(cfg.lid.lpca_k), len(train)))
    star = np.asarray(
      lid.lpca(jnp.asarray(train), k, queries=x, threshold=float(cfg.lid.lpca_threshold)),
      np.float64,
    )
    dets["neg_flipd"] = -flipd
    dets["lid_star_minus_flipd"] = star - flipd
    if cfg.sharpness.enabled and cfg.sharpness.at_knee:
      exact = model.dim <= cfg.sharpness.exact_max_dim
      settings = (None if exact else int(cfg.sharpness.num_probes), int(cfg.sharpness.chunk_size))
      xs = _knee_points(model, held, lid_res.t0)
      neg_tr, _, sq = _sharp_scores(
        model, xs, None, lid_res.t0, jax.random.fold_in(key, 1), settings, mesh
      )
      dets["neg_trace_knee"] = neg_tr
      dets["score_sq_knee"] = sq
  return Control(mem.ratio, mem.m_c, dets)


def regimes_lens(model: Model, train, held_out, key, rcfg, tick=None) -> Regimes:
  """``W_σ``, ``C_σ`` (with held-out data), the boundaries and the model-vs-``D*`` profile;
  ``tick()`` after each of the three curves."""
  tick = tick or (lambda: None)
  x = jnp.asarray(train, model.dtype)
  # Concentration and coverage over DISTINCT points (copies are one source point); the profile's
  # D* keeps the multiplicities (it is the optimum of the training loss on this very set).
  flat = np.asarray(train).reshape(len(train), -1)
  distinct = jnp.asarray(flat[np.sort(np.unique(flat, axis=0, return_index=True)[1])], x.dtype)
  sig = np.geomspace(*rcfg.sigma_range, int(rcfg.num_sigmas)).astype(np.dtype(model.dtype))
  k1, k2, k3 = jax.random.split(key, 3)
  conc = regimes.concentration(k1, distinct, sig, num_noise=int(rcfg.num_noise))
  tick()
  if held_out is not None:
    held = jnp.asarray(held_out, model.dtype)
    cov = np.asarray(
      regimes.shell_coverage(
        k2, distinct, held, sig, c=float(rcfg.shell_c), num_noise=int(rcfg.num_noise)
      ).coverage
    )
  else:
    cov = np.full(sig.shape, np.nan)
  tick()
  bounds = regimes.regime_boundaries(
    sig, np.nan_to_num(cov, nan=0.0), conc.max_weight, float(rcfg.threshold)
  )
  if held_out is not None and len(distinct) >= 3:
    bounds["rough"] = regimes.rough_boundaries(distinct, held, float(rcfg.shell_c))
  denoise = functools.partial(
    _denoise_jit, model.uncond_apply, model.schedule, model.parameterisation, model.params
  )
  prof = regimes.denoiser_profile(k3, denoise, x, sig, num_noise=int(rcfg.profile_num_noise))
  return Regimes(
    sig,
    np.asarray(conc.max_weight),
    np.asarray(conc.n_eff),
    cov,
    bounds,
    np.asarray(prof.rel_dist),
    np.asarray(prof.alignment),
  )


# The library's argument names and the audit config keys that set them (for error messages).
_WEIGHT_SPACE_KEYS = {
  "`select`": "`weight_space.select` (select)",
  "`num_iters`": "`weight_space.lanczos_iters` (num_iters)",
  "pass check=False": "set `weight_space.check = False`",
  "`k`": "`weight_space.k` (k)",
  "`alpha`": "`weight_space.alpha` (alpha)",
}


def _in_audit_terms(message: str) -> str:
  for lib, key in _WEIGHT_SPACE_KEYS.items():
    message = message.replace(lib, key)
  return f"weight-space lens: {message}"


def weight_space_lens(model: Model, gen: Generation, train, key, wcfg, mcfg, scfg, mesh=None):
  """``M_c`` of the generation noise under Laplace weight samples at ``η = wcfg.eta``.

  Linear flow matching with a velocity field only (the curvature loss is the FM loss).
  """
  if model.schedule is not paths.linear_fm() or model.parameterisation != "velocity":
    raise ValueError("the weight-space lens needs a linear-FM velocity model.")
  if model.cond is not None:
    raise ValueError("the weight-space lens supports unconditional models only.")
  k_fit, k_post = jax.random.split(key)
  check = bool(wcfg.get("check", True))
  try:
    lfit = laplace.fit(
      model.apply_fn,
      model.params,
      jnp.asarray(train, model.dtype),
      k_fit,
      k=int(wcfg.k),
      alpha=float(wcfg.alpha),
      loss_scale=float(wcfg.loss_scale),
      num_triples=int(wcfg.num_triples),
      select=wcfg.select or None,
      num_iters=int(wcfg.lanczos_iters) or None,
      refine_tol=float(wcfg.refine_tol) or None,
    )
    options = {
      "riemannian": dict(
        rtol=float(wcfg.geo_rtol), atol=float(wcfg.geo_atol), max_steps=int(wcfg.geo_max_steps)
      )
    }
    _, post = laplace.posterior_samples(
      lfit,
      float(wcfg.eta),
      k_post,
      int(wcfg.num_posterior),
      samplers=tuple(wcfg.samplers),
      mode=wcfg.mode,
      options={n: options[n] for n in wcfg.samplers if n in options},
      check=check,
    )
  except ValueError as err:
    raise ValueError(_in_audit_terms(str(err))) from err
  noise = jnp.asarray(gen.noise[gen.ok])
  flat = np.asarray(train).reshape(len(train), -1)
  cs = memorisation.check_cs(tuple(mcfg.cs) + (mcfg.c,))
  m_c, per_sample, num_ok = {}, {}, {}
  for name, ps in post.items():
    good = np.asarray(ps.success)
    num_ok[name] = int(good.sum())
    if not num_ok[name]:
      m_c[name] = {memorisation.c_label(c): float("nan") for c in cs}
      per_sample[name] = np.full(len(gen.ok), np.nan)
      continue
    # The whole stack generates (one compiled program for every sampler and call; failed posterior
    # samples are stood in for by θ*); only the successful posterior samples are scored.
    thetas = jnp.where(jnp.asarray(good)[:, None], ps.theta, lfit.theta_map[None, :])
    stack = memorisation.stack_memorisation(
      model.apply_fn,
      curvature.merge_stack(lfit.subset, thetas),
      noise,
      flat,
      cs,
      keep=good,
      solver=scfg.solver,
      rtol=scfg.rtol,
      atol=scfg.atol,
      max_steps=scfg.max_steps,
    )
    m_c[name] = dict(stack.summary["M_c"])
    rs = np.where(stack.generated, stack.ratios, np.nan)
    frac = np.nanmean(np.where(stack.generated, rs <= mcfg.c, np.nan)[good], axis=0)
    per_sample[name] = _scatter(frac, gen.ok)
  return WeightSpace(
    float(wcfg.eta), m_c, per_sample, num_ok, int(wcfg.num_posterior), float(lfit.grad_norm)
  )


# ---------------------------------------------------------------------------
# Summary.


def detector_scores(lid_res, sharp, guidance) -> dict:
  """``{name: (N,) score}``, larger = more likely memorised, for every detector computed."""
  out = {}
  if lid_res is not None:
    out["neg_flipd"] = -lid_res.flipd
    out["lid_star_minus_flipd"] = lid_res.lid_star - lid_res.flipd
  if sharp is not None:
    for k, name in enumerate(sharp.names):
      out[f"neg_trace_{name}"] = sharp.neg_trace[k]
      out[f"score_sq_{name}"] = sharp.score_sq[k]
  if guidance is not None:
    out["wen_eps"] = guidance.wen
    out["hs_detector"] = guidance.hs
  return out


def summarise(gen, mem, lid_res, regimes_res, weights, control, detectors, fpr: float) -> dict:
  """The headline numbers: M_c, detection per detector, MMH counts, the danger zone.

  ``detection``: every detector against the ratio labels of the generated samples.
  ``detection_vs_held_out`` (with ``control``): memorised generated samples (positives) against
  held-out real points (negatives), for the detectors that score both; it answers the same
  question when (nearly) every generated sample is memorised and ``detection`` has no negatives.
  """
  labels = mem.memorised[memorisation.c_label(mem.c)][gen.ok]
  det = {}
  for name, score in detectors.items():
    rep = metrics.detection_report(score[gen.ok], labels, fprs=(fpr,))
    det[name] = {
      "auroc": rep["auroc"],
      "tpr_at_fpr": rep[f"tpr_at_{fpr * 100:g}pct_fpr"],
      "num_positive": rep["num_positive"],
      "num_negative": rep["num_negative"],
      "num_nonfinite": rep["num_nonfinite"],
    }
  out = {
    "num_samples": int(len(gen.ok)),
    "num_scored": int(gen.ok.sum()),
    "solver": gen.summary,
    "c": mem.c,
    "M_c": mem.m_c,
    "num_memorised": int(labels.sum()),
    "fpr": fpr,
    "detection": det,
  }
  if control is not None:
    out["M_c_held_out"] = control.m_c
    vs = {}
    for name, neg in control.detectors.items():
      pos = detectors[name][gen.ok][labels]
      both = np.concatenate([pos, neg])
      y = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
      rep = metrics.detection_report(both, y, fprs=(fpr,))
      vs[name] = {
        "auroc": rep["auroc"],
        "tpr_at_fpr": rep[f"tpr_at_{fpr * 100:g}pct_fpr"],
        "num_positive": rep["num_positive"],
        "num_negative": rep["num_negative"],
        "num_nonfinite": rep["num_nonfinite"],
      }
    out["detection_vs_held_out"] = vs
  if lid_res is not None:
    out["mmh_counts"] = lid_res.mmh_counts
    out["knee_t0"] = lid_res.t0
    out["lid_exact"] = lid_res.exact
  if regimes_res is not None:
    b = regimes_res.boundaries
    out["danger_zone"] = {
      "lo": b["danger_lo"],
      "hi": b["danger_hi"],
      "sigma_small": b["sigma_small"],
      "sigma_large": b["sigma_large"],
      "threshold": b["threshold"],
      "coverage_available": bool(np.isfinite(regimes_res.coverage).all()),
    }
  if weights is not None:
    out["weight_space"] = {"eta": weights.eta, "M_c": weights.m_c, "num_ok": weights.num_ok}
  return out


# ---------------------------------------------------------------------------
# The pipeline.


@contextlib.contextmanager
def _lens(name: str, total: int, progress: bool, timings: dict):
  bar = tqdm.tqdm(total=total, desc=name, disable=not progress, leave=True)
  start = time.perf_counter()
  try:
    yield bar
  finally:
    bar.update(total - bar.n)
    bar.close()
    timings[name] = time.perf_counter() - start


# Settings that count something: integral numbers (never silently truncated), and their minimum.
_COUNTS = {
  "sample": {"num_samples": 1, "max_steps": 1},
  "lid": {"num_t0": 3, "num_probes": 1, "batch_size": 0, "lpca_k": 2, "exact_max_dim": 0},
  "sharpness": {"num_probes": 1, "chunk_size": 1, "exact_max_dim": 0},
  "regimes": {"num_sigmas": 2, "num_noise": 1, "profile_num_noise": 1},
  "weight_space": {
    "k": 1,
    "num_triples": 1,
    "lanczos_iters": 0,
    "num_posterior": 1,
    "geo_max_steps": 1,
  },
}


def check_config(cfg) -> None:
  """Refuse a config whose counts are not integers (or too small) or whose numbers are NaN/inf.

  Raises:
    ValueError: naming the setting, e.g. ``cfg.lid.num_probes``.
  """
  for section, fields in _COUNTS.items():
    for name, least in fields.items():
      v = cfg[section][name]
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
        raise ValueError(f"`cfg.{section}.{name}` must be an int >= {least}; got {v!r}.")
  for section in ("sample", "memorisation", "lid", "sharpness", "regimes", "weight_space"):
    for name, v in cfg[section].items():
      vals = v if isinstance(v, (tuple, list)) else (v,)
      for x in vals:
        if isinstance(x, float) and not np.isfinite(x):
          raise ValueError(f"`cfg.{section}.{name}` must be finite; got {v!r}.")
  memorisation.check_cs(tuple(cfg.memorisation.cs) + (cfg.memorisation.c,))


def _resolve_mesh(mesh):
  if mesh == "auto":
    return distributed.default_mesh()
  if mesh in (None, "none", ""):
    return None
  return mesh


def run(
  model: Model,
  train,
  key: jax.Array,
  cfg,
  *,
  held_out=None,
  mesh="auto",
  progress: bool = True,
) -> AuditReport:
  """Audit ``model`` against its training set: every lens, then the summary.

  Args:
    model: the :class:`memjax.audit.Model`.
    train: the training points ``(N, D)`` (or ``(N, *data_shape)``), copies included.
    key: PRNG key (noise, probes, curves).
    cfg: the audit config (``memjax.audit.configs.get_config()``): sections ``sample``,
      ``memorisation``, ``lid``, ``sharpness``, ``regimes``, ``weight_space`` and ``summary``;
      a lens whose section has ``enabled = False`` is skipped.
    held_out: points of the data distribution not trained on: shell coverage ``C_σ`` and the
      danger zone need them, and (``cfg.summary.held_out_control``) they are scored like the
      samples, as the reference negatives of ``detection_vs_held_out``.
    mesh: ``"auto"`` (all devices when more than one), ``None``, or a 1-D mesh of
      :mod:`memjax.distributed`; generation, neighbours, FLIPD and sharpness split their rows
      over it.
    progress: tqdm bars, one per lens.

  Returns:
    :class:`AuditReport`.

  Raises:
    ValueError: if ``train`` does not match ``model.data_shape`` or holds NaN/inf, if a setting
      of ``cfg`` is invalid (:func:`check_config`), or if no sample could be generated.
  """
  check_config(cfg)
  train = _checks.as_float("train", np.asarray(train))
  train = np.asarray(train, np.dtype(model.dtype)).reshape(len(train), -1)
  if train.shape[1] != model.dim:
    raise ValueError(
      f"`train` must hold points of shape {model.data_shape} (D = {model.dim}); got "
      f"{train.shape[1]} values per point."
    )
  _checks.check_finite("train", train)
  if held_out is not None:
    held_out = np.asarray(held_out, train.dtype).reshape(len(held_out), -1)
    _checks.check_last_dim("held_out", held_out, model.dim, f"(M, {model.dim})")
    _checks.check_finite("held_out", held_out)
  mesh = _resolve_mesh(mesh)
  names = ("noise", "lid", "sharp", "regimes", "weights", "control")
  keys = dict(zip(names, jax.random.split(key, len(names))))
  timings: dict = {}

  with _lens("generate", 1, progress, timings):
    gen = generate(model, keys["noise"], cfg.sample, mesh)
  if not gen.ok.any():
    raise ValueError(f"no sample was generated successfully: {gen.summary}.")
  with _lens("memorisation", 1, progress, timings):
    mem = memorisation_lens(gen.samples, gen.ok, train, cfg.memorisation, mesh)
  lid_res = sharp = guidance = reg = weights = None
  if cfg.lid.enabled:
    with _lens("lid", 3, progress, timings) as bar:
      lid_res = lid_lens(
        model, gen.samples, gen.ok, train, mem, keys["lid"], cfg.lid, mesh, lambda: bar.update()
      )
  if cfg.sharpness.enabled:
    names, times = detector_times(model, None if lid_res is None else lid_res.t0, cfg.sharpness)
    with _lens("sharpness", len(times), progress, timings) as bar:
      sharp, guidance = sharpness_lens(
        model,
        gen,
        names,
        times,
        keys["sharp"],
        cfg.sharpness,
        cfg.sample,
        mesh,
        lambda: bar.update(),
      )
  if cfg.regimes.enabled:
    with _lens("regimes", 3, progress, timings) as bar:
      reg = regimes_lens(model, train, held_out, keys["regimes"], cfg.regimes, lambda: bar.update())
  if cfg.weight_space.enabled:
    with _lens("weight_space", 1, progress, timings):
      weights = weight_space_lens(
        model, gen, train, keys["weights"], cfg.weight_space, cfg.memorisation, cfg.sample, mesh
      )
  control = None
  if held_out is not None and cfg.summary.held_out_control:
    with _lens("held-out control", 1, progress, timings):
      control = control_lens(model, held_out, train, lid_res, keys["control"], cfg, mesh)
  detectors = detector_scores(lid_res, sharp, guidance)
  summary = summarise(gen, mem, lid_res, reg, weights, control, detectors, float(cfg.summary.fpr))
  summary["seconds"] = timings
  summary["devices"] = 1 if mesh is None else int(mesh.size)
  return AuditReport(
    model.describe(),
    gen,
    mem,
    lid_res,
    sharp,
    guidance,
    reg,
    weights,
    control,
    detectors,
    summary,
    train,
  )
