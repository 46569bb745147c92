r"""The audit's lenses: one trained field, four views of memorisation, one summary.

:func:`run` generates samples from fixed noise and looks at each of them through

* **memorisation** (:mod:`memjax.memorisation`): nearest and second-nearest training point,
  ``r = d1²/d2²`` and the label ``r ≤ c`` at every ``c`` of the grid;
* **LID** (:mod:`memjax.lid`): FLIPD at a detection noise level FIXED BEFORE THE DATA (the LID
  paper's matched level, σ/ψ of VP ``t0 = 0.05`` ≈ 0.174, by default), with its standard error;
  the FLIPD curve over a grid of ``t0`` and its Kneedle knee as a diagnostic (refused as a
  detection time when it sits on the grid's edge); ``LID*`` of the nearest training point by
  local PCA (flagged "not estimable" when the neighbourhood is the whole training set or
  rank-deficient) and the manifold-memorisation (MMH) labels under two DD-Mem rules;
* **sharpness** (:mod:`memjax.sharpness`): ``−tr ∇ₓs`` and ``||s||²`` averaged over noisy states
  ``ψx̂ + σε`` at the detection level, and at the sampler's state reached from the same noise at
  the configured σ/ψ times; with a class-conditional model also Wen et al.'s
  ``||ε̂(x, c) − ε̂(x, ∅)||`` and ``||H^Δ s^Δ||²``;
* **noise regimes** (:mod:`memjax.regimes`, on the training multiset as trained): posterior
  concentration ``W_σ``, shell coverage ``C_σ`` of held-out points, the danger zone, and how
  close the model's denoiser is to the memorising optimum ``D*`` per σ;
* optionally the **weight space** (:mod:`memjax.laplace`): ``M_c`` of the same noise under
  Euclidean and Riemannian Laplace samples of the weights at one ``η``.

The summary scores every detector on the GENERATED samples against their ratio labels, in the
direction fixed a priori in :data:`DIRECTIONS` (AUROC with a bootstrap CI and TPR at 1 % FPR; an
AUROC below 0.5 is reported as inverted, never flipped), per prompt for conditional models. With
held-out data it adds, apart, a membership baseline (training vs held-out real points through
the same detectors: not detection evidence) and the memorised fraction of real held-out points
(the chance floor of ``M_c``). Samples whose solve failed are reported with their diffrax result
code and left out of every score (never replaced).

References:
  Ross et al., "A Geometric Framework for Understanding Memorization in Generative Models",
  arXiv:2411.00113. Kamkari et al., "A Geometric View of Data Complexity: Efficient Local
  Intrinsic Dimension Estimation with Diffusion Models", arXiv:2406.03537. Jeon et al.,
  "Understanding and Mitigating Memorization in Generative Models via Sharpness of Probability
  Landscapes", arXiv:2412.04140. "Two Calm Ends and the Wild Middle: A Geometric Picture of
  Memorization in Diffusion Models", arXiv:2602.17846. "Reducing Memorisation in Generative
  Models via Riemannian Bayesian Inference", arXiv:2602.00199.
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
  """FLIPD at the detection noise level, the knee diagnostic, LID* and the MMH labels."""

  t0s: np.ndarray  # (T,) times of the diagnostic curve, increasing noise
  noise_to_signal: np.ndarray  # (T,) σ/ψ of those times
  curve: np.ndarray  # (T, N) FLIPD at each t0
  knee: int  # index of the curve's Kneedle knee in t0s (a diagnostic)
  knee_t0: float  # the knee time
  knee_on_edge: bool  # the knee is the first or last grid time: refused as a detection time
  t0: float  # the detection time FLIPD is scored at
  t0_noise_to_signal: float  # its σ/ψ
  t0_source: str  # "fixed" (σ/ψ set before the data) or "knee"; why the knee was refused
  flipd: np.ndarray  # (N,) FLIPD at t0
  sem: np.ndarray  # (N,) its standard error (0 when exact)
  exact: bool  # exact trace (small D) or Hutchinson
  lid_star: np.ndarray  # (N,) local-PCA LID* of the nearest training point (NaN: not estimable)
  lid_star_note: str  # "" when LID* is estimable, else why not
  mmh: dict  # {rule: (N,) memjax.lid MMH class (0 not memorised, 1 OD, 2 DD, 3 other; -1)}
  mmh_counts: dict  # {rule: {name: count}}; {} when LID* is not estimable


class Sharpness(NamedTuple):
  """``−tr ∇s`` and ``||s||²`` at each detector time.

  At ``"det"`` (the detection noise level) they are averaged over ``K`` noisy states
  ``y = ψ x̂ + σ ε`` of each sample; at the ``nsr…`` times they are read at the sampler's state
  reached from the same noise. ``residual`` is the clean-point quantity ``||s(ψ x̂, t)||²`` at
  the detection time: the denoising residual ``ψ² ||D(ψ x̂) − x̂||² / σ⁴``, reported beside the
  detectors, never as sharpness.
  """

  names: tuple  # (K,) names of the detector times
  times: np.ndarray  # (K,)
  noise_to_signal: np.ndarray  # (K,)
  states: tuple  # (K,) "noisy (K draws)" or "sampler"
  neg_trace: np.ndarray  # (K, N) −tr ∇ₓ s
  trace_sem: np.ndarray  # (K, N) standard error of the trace (0 when exact)
  score_sq: np.ndarray  # (K, N) ||s||²
  residual: np.ndarray | None  # (N,) denoising residual at the detection time


class Guidance(NamedTuple):
  """Classifier-free-guidance detectors at the first detector time (conditional models)."""

  time: float
  wen: np.ndarray  # (N,) ||ε̂(x, t, c) − ε̂(x, t, ∅)||
  hs: np.ndarray  # (N,) ||H^Δ s^Δ||²


class Regimes(NamedTuple):
  """Noise regimes of the training set and the model's distance to ``D*`` per σ."""

  sigmas: np.ndarray  # (S,) VE noise levels σ/ψ
  max_weight: np.ndarray  # (S,) W_σ (of the training multiset, or the distinct points)
  n_eff: np.ndarray  # (S,) E exp H
  coverage: np.ndarray  # (S,) C_σ of held-out points (NaN without held-out data)
  boundaries: dict  # memjax.regimes.regime_boundaries (+ "rough" guesses)
  rel_dist: np.ndarray  # (S,) E||D_θ − D*|| / E||D* − D_lin||
  alignment: np.ndarray  # (S,) 1: D_θ behaves like D*, 0: like D_lin
  multiset: bool  # W_σ over the training multiset as trained (copies weigh by multiplicity)


class WeightSpace(NamedTuple):
  """M_c of the same noise under Laplace samples of the weights at one η."""

  eta: float
  m_c: dict  # {sampler: {c_label: M_c pooled over the successful posterior samples}}
  per_sample: dict  # {sampler: (N,) fraction of posterior samples whose sample is memorised}
  num_ok: dict  # {sampler: successful posterior samples}
  num_total: int
  grad_norm: float  # ||∇L(θ*)|| of the curvature loss at the θ* used


class Membership(NamedTuple):
  """The membership baseline: training points against held-out real points, same detectors.

  This measures whether a detector tells a training member from a fresh draw of the data; it
  says nothing about memorised vs non-memorised GENERATED samples and is never detection
  evidence. ``m_c`` (held-out points through the criterion) is the chance floor of ``M_c``.
  """

  m_c: dict  # {c_label: M_c of held-out points}
  held_memorised: np.ndarray  # (M,) bool, r ≤ c of the held-out points
  num_train: int  # training points scored (distinct, up to num_samples)
  detectors: dict  # {name: ((n,) training-point scores, (M,) held-out scores)}


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
  membership: Membership | None  # training vs held-out real points (not detection evidence)
  detectors: dict  # {name: (N,) score, larger = more likely memorised (DIRECTIONS)}
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


@functools.partial(jax.jit, static_argnums=(0, 1))
def _score_sq_jit(score_fn, mesh, xs, t):
  one = lambda x: sharpness.score_norm_sq(score_fn, x, t)
  return distributed.map_rows(jax.vmap(one), xs, mesh=mesh)


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


def lid_star_estimable(num_train: int, k: int, dim: int) -> str:
  """``""`` when local PCA on ``k`` neighbours among ``num_train`` points can estimate a LID*
  up to ``dim``, else the reason it cannot.

  Not estimable when the neighbourhood is the whole training set (``k ≥ num_train``: every
  query gets the same global estimate) or when ``k`` centred points have rank ``≤ k − 1 < D``
  (dimensions beyond ``k − 1`` are invisible, so LID* is capped below ``D`` by the sample size,
  not the data).
  """
  if k >= num_train:
    return (
      f"not estimable: lid.lpca_k = {k} neighbours >= {num_train} training points (set "
      "lid.lpca_k below the training set's size)"
    )
  if k - 1 < dim:
    return (
      f"not estimable: lid.lpca_k = {k} neighbours give rank <= {k - 1} < D = {dim} (set "
      "lid.lpca_k above D)"
    )
  return ""


def _lid_star(train, x, lcfg, dim):
  """``(LID* (Q,), note)``: local PCA of each query's nearest training point, or NaN + why not."""
  k = int(lcfg.lpca_k)
  note = lid_star_estimable(len(train), k, dim)
  if note:
    return np.full(x.shape[0], np.nan), note
  star = lid.lpca(jnp.asarray(train), k, queries=x, threshold=float(lcfg.lpca_threshold))
  return np.asarray(star, np.float64), ""


def detection_time(model: Model, lcfg) -> float:
  """The time of ``model.schedule`` at the detection noise level ``lcfg.detection_noise_to_signal``
  (fixed before the data: the LID paper's VP ``t0 = 0.05`` by default)."""
  return float(_times(model.schedule, [float(lcfg.detection_noise_to_signal)], model.dtype)[0])


def lid_lens(
  model: Model, samples, ok, train, mem: Memorisation, key, lcfg, mesh=None, tick=None
) -> Lid:
  """FLIPD at the detection time (with its SEM), the knee diagnostic, LID* and the MMH labels.

  The detection time is fixed before the data (``lcfg.detection_noise_to_signal``); with
  ``lcfg.t0_rule = "knee"`` the Kneedle knee of the FLIPD curve is used instead, unless it sits
  on the grid's edge (then refused, and the fixed level is used and the refusal recorded).
  ``tick()`` is called after each of the three steps (progress bars).
  """
  tick = tick or (lambda: None)
  if lcfg.t0_rule not in ("fixed", "knee"):
    raise ValueError(f"`cfg.lid.t0_rule` must be 'fixed' or 'knee'; got {lcfg.t0_rule!r}.")
  if lcfg.dd_rule not in MMH_RULES:
    raise ValueError(f"`cfg.lid.dd_rule` must be one of {MMH_RULES}; got {lcfg.dd_rule!r}.")
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
  knee = lid.flipd_at_knee(model.field, x, jnp.asarray(t0s), model.schedule, **opts)
  tick()
  t0, source = detection_time(model, lcfg), "fixed"
  if lcfg.t0_rule == "knee":
    if knee.on_edge:
      source = "fixed (knee refused: on the grid's edge)"
    else:
      t0, source = knee.t0, "knee"
  det = lid.flipd_details(model.field, x, t0, model.schedule, **opts)
  tick()
  star, note = _lid_star(train, x, lcfg, model.dim)
  tick()
  flipd = np.asarray(det.lid)
  mmh, counts = {}, {}
  if not note:
    memd = jnp.asarray(mem.memorised[memorisation.c_label(mem.c)][ok])
    for rule in MMH_RULES:
      dd_max = _dd_max_lid(rule, lcfg, model.dim)
      labels = np.asarray(
        lid.mmh_labels(
          jnp.asarray(flipd),
          jnp.asarray(star, flipd.dtype),
          memd,
          tol=float(lcfg.mmh_tol),
          dd_max_lid=dd_max,
        )
      )
      mmh[rule] = _scatter(labels, ok, -1)
      counts[rule] = lid.mmh_counts(labels)
  ratio_t0 = float(paths.noise_to_signal(model.schedule, jnp.asarray(t0, model.dtype)))
  return Lid(
    t0s,
    ratios,
    np.stack([_scatter(c, ok) for c in np.asarray(knee.curves)]),
    knee.index,
    knee.t0,
    knee.on_edge,
    float(t0),
    ratio_t0,
    source,
    _scatter(flipd, ok),
    _scatter(det.sem, ok),
    bool(exact),
    _scatter(star, ok),
    note,
    mmh,
    counts,
  )


# The MMH rules for DD-Mem (|LIDθ − LID*| ≤ tol and LID* small): "paper" (Ross et al.: LID* small
# RELATIVE TO D, here LID* ≤ dd_max_lid_fraction · D, e.g. template copies) and
# "exact_duplicate" (LID* ≤ dd_max_lid, i.e. LID* ≈ 0: exact copies only).
MMH_RULES = ("paper", "exact_duplicate")


def _dd_max_lid(rule, lcfg, dim):
  if rule == "paper":
    return float(lcfg.dd_max_lid_fraction) * dim
  return float(lcfg.dd_max_lid)


def detector_times(model: Model, det_t0: float | None, scfg) -> tuple[tuple, np.ndarray]:
  """``(names, times)``: the detection time ``"det"`` (noisy states, when ``det_t0`` is given)
  and the configured σ/ψ ratios ``"nsr…"`` (sampler states)."""
  names, times = [], []
  if det_t0 is not None and scfg.at_detection:
    names.append("det")
    times.append(det_t0)
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


def noisy_states(model: Model, x, t, num_noisy: int, key):
  """``(K, N, D)`` noisy states ``y_k = ψ(t) x + σ(t) ε_k`` of the clean points ``x`` at time
  ``t``, ``ε_k = jax.random.normal(key, (K, N, D))``."""
  x = np.asarray(x)
  eps = np.asarray(jax.random.normal(key, (int(num_noisy),) + x.shape, model.dtype))
  tt = jnp.asarray(t, model.dtype)
  psi, sig = np.asarray(model.schedule.psi(tt)), np.asarray(model.schedule.sigma(tt))
  return psi * x[None] + sig * eps


def noisy_sharpness(model: Model, x, labels, t, num_noisy: int, key, settings, mesh=None):
  """``−tr ∇s`` (and its SEM) and ``||s||²`` averaged over ``K`` noisy states of each point.

  ``E_ε[−tr ∇_y s(y, t)]`` and ``E_ε[||s(y, t)||²]`` at ``y = ψ(t) x + σ(t) ε`` (Monte Carlo
  over the ``K`` draws of :func:`noisy_states`): the expectation over ``p_t(y | x)`` in which
  the sharpness papers state their lemma, not the clean point ``ψ x`` (where ``||s||²`` is the
  denoising residual). Returns three ``(N,)`` arrays (NaN where any state is non-finite).

  References:
    Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
    Probability Landscapes", arXiv:2412.04140.
  """
  k_eps, k_probe = jax.random.split(key)
  ys = noisy_states(model, x, t, num_noisy, k_eps)
  K, N = ys.shape[:2]
  lab = None if labels is None else np.tile(np.asarray(labels), K)
  neg_tr, sem, sq = _sharp_scores(model, ys.reshape(K * N, -1), lab, t, k_probe, settings, mesh)
  mean = lambda v: np.asarray(v).reshape(K, N).mean(axis=0)
  # The SEM of the average of K independent Hutchinson estimates.
  sem = np.sqrt(np.sum(np.asarray(sem).reshape(K, N) ** 2, axis=0)) / K
  return mean(neg_tr), sem, mean(sq)


def sharpness_lens(
  model: Model, gen: Generation, names, times, key, hcfg, scfg, mesh=None, tick=None
):
  """``−tr ∇s`` (Hutchinson, exact for small D) and ``||s||²`` at each detector time.

  At ``"det"`` (the detection noise level, where FLIPD is scored) they are averaged over
  ``hcfg.num_noisy`` noisy states ``ψ x̂ + σ ε`` of each sample (:func:`noisy_sharpness`), and
  the denoising residual ``||s(ψ x̂)||²`` at the clean point is kept apart; at the σ/ψ times they
  are read at the sampler's state reached from the same noise (the sharpness papers' protocol
  for the first sampling step). A conditional model also gets the guidance detectors at the
  first sampler-state time (else at the detection time).

  Returns ``(Sharpness, Guidance | None)``; ``tick()`` is called after each time.
  """
  tick = tick or (lambda: None)
  ok = gen.ok
  exact = model.dim <= hcfg.exact_max_dim
  settings = (None if exact else int(hcfg.num_probes), int(hcfg.chunk_size))
  labels = None if gen.labels is None else gen.labels[ok]
  rows = {"neg_trace": [], "sem": [], "score_sq": []}
  states, residual, guidance = [], None, None
  for i, t in enumerate(times):
    k = jax.random.fold_in(key, i)
    if names[i] == "det":
      xs = _clean_points(model, gen.samples[ok], t)
      out = noisy_sharpness(
        model, gen.samples[ok], labels, t, int(hcfg.num_noisy), k, settings, mesh
      )
      residual = _scatter(_residual(model, xs, labels, t, mesh), ok)
      states.append(f"noisy ({int(hcfg.num_noisy)} draws)")
    else:
      xs, codes = _states_at(model, gen, t, scfg, mesh)
      xs = np.where((codes == 0)[:, None], xs, np.nan)
      out = _sharp_scores(model, xs, labels, t, k, settings, mesh)
      states.append("sampler")
    for name, o in zip(rows, out):
      rows[name].append(_scatter(o, ok))
    if model.cond is not None and guidance is None and (names[i] != "det" or i == len(times) - 1):
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
    tuple(states),
    np.stack(rows["neg_trace"]),
    np.stack(rows["sem"]),
    np.stack(rows["score_sq"]),
    residual,
  )
  return sharp, guidance


def _residual(model: Model, xs, labels, t, mesh):
  """``||s(y, t)||²`` at the rows of ``xs`` (per label for a conditional model)."""
  out = np.full(len(xs), np.nan)
  groups = [(None, np.ones(len(xs), bool))]
  if model.cond is not None:
    groups = [(int(c), labels == c) for c in np.unique(labels)]
  for label, sel in groups:
    if sel.any():
      out[sel] = np.asarray(
        _score_sq_jit(
          model.point("score", label), mesh, jnp.asarray(xs[sel]), jnp.asarray(t, model.dtype)
        )
      )
  return out


def _clean_points(model: Model, x, t):
  """``ψ(t) x``: the clean points rescaled to time ``t`` (where FLIPD evaluates)."""
  return np.asarray(model.schedule.psi(jnp.asarray(t, model.dtype))) * np.asarray(x)


def stateless_scores(model: Model, x, train, lid_res, key, cfg, mesh=None) -> dict:
  """The detectors that need no sampler state, at points ``x`` (real or generated): FLIPD and
  LID* − FLIPD at the detection time, and the noisy-state sharpness there."""
  dets = {}
  xj = jnp.asarray(x, model.dtype)
  k_lid, k_sharp = jax.random.split(key)
  if lid_res is not None:
    opts = dict(
      parameterisation=model.parameterisation,
      key=k_lid,
      n_probes=None if lid_res.exact else int(cfg.lid.num_probes),
      batch_size=int(cfg.lid.batch_size) if cfg.lid.batch_size else None,
      mesh=mesh,
    )
    flipd = np.asarray(lid.flipd(model.field, xj, lid_res.t0, model.schedule, **opts))
    dets["neg_flipd"] = -flipd
    if not lid_res.lid_star_note:
      dets["lid_star_minus_flipd"] = _lid_star(train, xj, cfg.lid, model.dim)[0] - flipd
  h = cfg.sharpness
  if h.enabled and h.at_detection:
    t = lid_res.t0 if lid_res is not None else detection_time(model, cfg.lid)
    exact = model.dim <= h.exact_max_dim
    settings = (None if exact else int(h.num_probes), int(h.chunk_size))
    neg_tr, _, sq = noisy_sharpness(model, x, None, t, int(h.num_noisy), k_sharp, settings, mesh)
    dets["neg_trace_det"] = neg_tr
    dets["score_sq_det"] = sq
  return dets


def membership_lens(model: Model, held_out, train, lid_res, key, cfg, mesh=None) -> Membership:
  """Training points (distinct, up to ``num_samples``, drawn with ``key``) and held-out real
  points (up to ``num_samples``) through the same stateless detectors, and the memorisation
  ratio of the held-out points (the chance floor of ``M_c``).

  A membership baseline: it compares members with non-members of the training set, both real;
  it is reported apart and never used as evidence that a detector finds memorised samples.
  """
  n = int(cfg.sample.num_samples)
  held = np.asarray(held_out)[:n]
  mem = memorisation_lens(held, np.ones(len(held), bool), train, cfg.memorisation, mesh)
  flat = np.asarray(train).reshape(len(train), -1)
  distinct = flat[np.sort(np.unique(flat, axis=0, return_index=True)[1])]
  k_pick, k_train, k_held = jax.random.split(key, 3)
  pick = np.asarray(jax.random.permutation(k_pick, len(distinct)))[:n]
  members = distinct[np.sort(pick)]
  dets = {}
  if model.cond is None:
    a = stateless_scores(model, members, train, lid_res, k_train, cfg, mesh)
    b = stateless_scores(model, held, train, lid_res, k_held, cfg, mesh)
    dets = {name: (a[name], b[name]) for name in a}
  label = memorisation.c_label(mem.c)
  return Membership(mem.m_c, mem.memorised[label], len(members), dets)


def _multiset_posterior(distinct, log_counts, y, sigma):
  """``(max_j w_j, H)`` of ``w_j ∝ m_j exp(−||y − u_j||² / 2σ²)`` for each row of ``y``: the
  posterior over the DISTINCT points ``u_j`` of a multiset with multiplicities ``m_j``."""
  d2 = jnp.sum((y[:, None, :] - distinct[None]) ** 2, axis=-1)
  logits = log_counts[None] - d2 / (2.0 * sigma**2)
  logw = logits - jax.scipy.special.logsumexp(logits, axis=1, keepdims=True)
  w = jnp.exp(logw)
  return jnp.max(w, axis=1), -jnp.sum(w * logw, axis=1)


_multiset_posterior_jit = jax.jit(_multiset_posterior)


def multiset_concentration(key, train, sigmas, num_noise: int):
  """``W_σ`` and ``E exp H`` of the training MULTISET as trained.

  Noisy states ``y = x + σz`` start at every training row (a point copied ``m`` times is drawn
  ``m`` times as often), and the posterior of ``y`` is over the distinct points with prior
  weights equal to their multiplicities (the empirical optimum of the training loss on this very
  set); ``W_σ = E max_j w_j``, ``N_eff = E exp H``. Returns ``(W (S,), N_eff (S,))``.

  References:
    "Two Calm Ends and the Wild Middle: A Geometric Picture of Memorization in Diffusion Models",
    arXiv:2602.17846.
  """
  x = np.asarray(train)
  distinct, counts = np.unique(x, axis=0, return_counts=True)
  base = np.repeat(x, int(num_noise), axis=0)
  z = np.asarray(jax.random.normal(key, base.shape, x.dtype))
  dj, lc = jnp.asarray(distinct), jnp.asarray(np.log(counts), x.dtype)
  w, ne = [], []
  for s in np.asarray(sigmas):
    mw, h = _multiset_posterior_jit(dj, lc, jnp.asarray(base + s * z), jnp.asarray(s, x.dtype))
    w.append(float(jnp.mean(mw)))
    ne.append(float(jnp.mean(jnp.exp(h))))
  return np.asarray(w), np.asarray(ne)


def regimes_lens(model: Model, train, held_out, key, rcfg, tick=None) -> Regimes:
  """``W_σ``, ``C_σ`` (with held-out data), the boundaries and the model-vs-``D*`` profile;
  ``tick()`` after each of the three curves.

  ``W_σ`` is that of the training multiset as trained (:func:`multiset_concentration`) with
  ``rcfg.multiset`` (default), else of the distinct points; ``C_σ`` is over the distinct points
  (a shell around a copy is the same shell).
  """
  tick = tick or (lambda: None)
  x = jnp.asarray(train, model.dtype)
  flat = np.asarray(train).reshape(len(train), -1)
  distinct = jnp.asarray(flat[np.sort(np.unique(flat, axis=0, return_index=True)[1])], x.dtype)
  sig = np.geomspace(*rcfg.sigma_range, int(rcfg.num_sigmas)).astype(np.dtype(model.dtype))
  k1, k2, k3 = jax.random.split(key, 3)
  if rcfg.multiset:
    max_weight, n_eff = multiset_concentration(k1, flat, sig, int(rcfg.num_noise))
  else:
    conc = regimes.concentration(k1, distinct, sig, num_noise=int(rcfg.num_noise))
    max_weight, n_eff = np.asarray(conc.max_weight), np.asarray(conc.n_eff)
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
    sig, np.nan_to_num(cov, nan=0.0), max_weight, float(rcfg.threshold)
  )
  if held_out is not None and len(distinct) >= 3:
    bounds["rough"] = regimes.rough_boundaries(distinct, held, float(rcfg.shell_c))
  denoise = functools.partial(
    _denoise_jit, model.uncond_apply, model.schedule, model.parameterisation, model.params
  )
  prof = regimes.denoiser_profile(k3, denoise, x, sig, num_noise=int(rcfg.profile_num_noise))
  return Regimes(
    sig,
    np.asarray(max_weight),
    np.asarray(n_eff),
    cov,
    bounds,
    np.asarray(prof.rel_dist),
    np.asarray(prof.alignment),
    bool(rcfg.multiset),
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

# Each detector's expected direction, fixed before any data: the score is oriented so that a
# LARGER score means "more likely memorised", for the reason given. AUROC is always computed in
# this direction; below 0.5 the detector is reported as inverted, never flipped.
DIRECTIONS = {
  "neg_flipd": "low FLIPD ⇒ memorised (a memorised sample sits on a low-dimensional piece of "
  "the model's manifold; Ross et al., Kamkari et al.)",
  "lid_star_minus_flipd": "FLIPD below the data's LID* ⇒ memorised (OD-Mem; Ross et al.)",
  "neg_trace": "large −tr ∇s ⇒ memorised (a sharp peak of the density; Jeon et al.)",
  "score_sq": "large ||s||² ⇒ memorised (Jeon et al.'s score-norm detector)",
  "wen_eps": "large ||ε̂(x, c) − ε̂(x, ∅)|| ⇒ memorised (Wen et al.)",
  "hs_detector": "large ||H^Δ s^Δ||² ⇒ memorised (Jeon et al.)",
}
INVERTED = "inverted — not evidence for this detector"

# What each detector measures, in one plain line (the report's "what it measures" column).
MEANINGS = {
  "neg_flipd": "minus FLIPD, the model's local intrinsic dimension at the sample (how many "
  "directions the model lets the sample move in)",
  "lid_star_minus_flipd": "the data's local dimension near the nearest training point (LID*, "
  "local PCA) minus the model's (FLIPD)",
  "neg_trace": "minus the trace of the score's Jacobian: how sharply the model's log-density "
  "peaks at the sample",
  "score_sq": "the squared norm of the score: how hard the model pulls the noisy sample "
  "towards one place",
  "wen_eps": "how much the class label changes the predicted noise (Wen et al.)",
  "hs_detector": "the guidance difference pushed through the Hessian: sharpness along the "
  "direction the label pulls (Jeon et al.)",
}


def _by_detector(table: dict, name: str, what: str) -> tuple[str, str]:
  """``(text, suffix)`` of detector ``name`` in ``table``, by exact name or by ``key_suffix``
  (the evaluation time, e.g. ``det`` or ``nsr13.12``; ``""`` for an exact name)."""
  for key, text in table.items():
    if name == key:
      return text, ""
    if name.startswith(key + "_"):
      return text, name[len(key) + 1 :]
  raise ValueError(f"detector {name!r} has no {what}.")


def detector_meaning(name: str) -> str:
  """One plain line on what detector ``name`` measures, with the time it is evaluated at."""
  text, when = _by_detector(MEANINGS, name, "meaning in MEANINGS")
  if not when:
    return text
  if when == "det":
    return text + ", averaged over noisy copies of the sample at the detection noise level"
  if when.startswith("nsr"):
    return text + f", at σ/ψ = {when[3:]} on the sampler's path from the same noise"
  return text + f" ({when})"


def detector_direction(name: str) -> str:
  """The expected direction of detector ``name`` (:data:`DIRECTIONS`, by name or prefix)."""
  return _by_detector(DIRECTIONS, name, "direction fixed in DIRECTIONS")[0]


def detector_scores(lid_res, sharp, guidance) -> dict:
  """``{name: (N,) score}``, larger = more likely memorised, for every detector computed."""
  out = {}
  if lid_res is not None:
    out["neg_flipd"] = -lid_res.flipd
    if not lid_res.lid_star_note:
      out["lid_star_minus_flipd"] = lid_res.lid_star - lid_res.flipd
  if sharp is not None:
    for k, name in enumerate(sharp.names):
      out[f"neg_trace_{name}"] = sharp.neg_trace[k]
      out[f"score_sq_{name}"] = sharp.score_sq[k]
  if guidance is not None:
    out["wen_eps"] = guidance.wen
    out["hs_detector"] = guidance.hs
  return out


def _status(auroc, lo, hi) -> str:
  if not np.isfinite(auroc):
    return "undefined (one class)"
  if auroc < 0.5:
    return INVERTED + (" (CI contains 0.5)" if hi >= 0.5 else "")
  return "separates" if lo > 0.5 else "chance (CI contains 0.5)"


def detection_row(name, scores, labels, scfg, seed: int = 0) -> dict:
  """One detector's row: its direction, AUROC in that direction with a bootstrap CI,
  TPR at ``scfg.fpr``, class counts and a status (``INVERTED`` when AUROC < 0.5)."""
  direction = detector_direction(name)  # first: a detector without a direction is refused
  fpr = float(scfg.fpr)
  rep = metrics.detection_report(scores, labels, fprs=(fpr,))
  lo = hi = float("nan")
  if np.isfinite(rep["auroc"]):
    fin = np.isfinite(np.asarray(scores, np.float64))
    _, lo, hi = metrics.auroc_ci(
      np.asarray(scores)[fin],
      np.asarray(labels)[fin],
      num_resamples=int(scfg.bootstrap),
      level=float(scfg.ci_level),
      seed=seed,
    )
  return {
    "meaning": detector_meaning(name),
    "direction": direction,
    "auroc": rep["auroc"],
    "ci_lo": lo,
    "ci_hi": hi,
    "tpr_at_fpr": rep[f"tpr_at_{fpr * 100:g}pct_fpr"],
    "num_positive": rep["num_positive"],
    "num_negative": rep["num_negative"],
    "num_nonfinite": rep["num_nonfinite"],
    "status": _status(rep["auroc"], lo, hi),
  }


def per_prompt_rows(gen, labels, detectors, scfg) -> dict:
  """Per-prompt detection of a conditional model: each prompt (class label) scores the mean of
  its ``n`` generations, is memorised when at least half of them are, and prompts are ranked
  (:func:`memjax.metrics.group_by_prompt`, :func:`memjax.metrics.per_prompt_detection`, the
  protocol of ``experiments/sharpness/detection.py``). ``{"note": why}`` when the prompts do
  not have equally many scored generations."""
  prompts = gen.labels[gen.ok]
  _, counts = np.unique(prompts, return_counts=True)
  if len(set(counts.tolist())) != 1:
    return {"note": f"not computed: unequal scored generations per prompt {counts.tolist()}"}
  out = {}
  for name, score in detectors.items():
    _, s, y = metrics.group_by_prompt(score[gen.ok], prompts, labels)
    row = detection_row(name, np.mean(s, axis=1), y, scfg)
    row["generations_per_prompt"] = int(s.shape[1])
    out[name] = row
  return out


def model_time(schedule, sigma) -> float:
  """The model's own time at the VE noise level ``σ`` (noise-to-signal σ/ψ = σ of its path):
  the time at which its noisy state is ``ψ (x + σ ε)``. NaN for a non-finite ``σ``."""
  if not np.isfinite(sigma):
    return float("nan")
  return float(_sigma_to_t(schedule, jnp.asarray(sigma, jnp.float32)))


def _danger_zone(regimes_res, rcfg, schedule=None) -> dict:
  b = regimes_res.boundaries
  lo, hi = b["danger_lo"], b["danger_hi"]
  found = bool(np.isfinite(lo) and np.isfinite(hi) and hi > lo)
  t_lo = t_hi = float("nan")
  text = "none found"
  if found:
    text = f"VE σ ∈ [{lo:.3g}, {hi:.3g}]"
    if schedule is not None:
      # σ grows as t moves to the noise end: the interval's ends swap when noise sits at t = 0.
      t_lo, t_hi = sorted((model_time(schedule, lo), model_time(schedule, hi)))
      text += f", the model's time t ∈ [{t_lo:.3g}, {t_hi:.3g}] ({schedule.name})"
  return {
    "found": found,
    "text": text,
    "lo": lo if found else float("nan"),
    "hi": hi if found else float("nan"),
    "t_lo": t_lo,
    "t_hi": t_hi,
    "grid_lo": lo,
    "grid_hi": hi,
    "sigma_small": b["sigma_small"],
    "sigma_large": b["sigma_large"],
    "threshold": b["threshold"],
    "shell_c": float(rcfg.shell_c),
    "multiset": regimes_res.multiset,
    "coverage_available": bool(np.isfinite(regimes_res.coverage).all()),
    "definition": (
      "paper (arXiv:2602.17846): shell coverage C_σ and posterior concentration W_σ, a danger "
      "zone at medium noise where both are high; memjax: the zone is the grid σ with C_σ ≥ "
      f"{b['threshold']:g} and W_σ ≥ {b['threshold']:g}, shells of c = {float(rcfg.shell_c):g} "
      "(config regimes.threshold, regimes.shell_c), W_σ on the "
      + ("training multiset as trained" if regimes_res.multiset else "distinct training points")
      + "; a zone of a single grid σ is reported as none found"
    ),
  }


def off_data_warnings(gen: Generation, train, held_out, scfg) -> list[str]:
  """Warn when the generated samples lie far from BOTH the training and the held-out data.

  A model passed in the wrong time convention (or with the wrong schedule or parameterisation)
  integrates "successfully" to points that are neither copies nor new data. The scale is the
  held-out points' own median distance to their nearest training point ``m``; a warning is
  raised when the samples' median distance to the nearer of the two sets exceeds
  ``scfg.off_data_factor · m``. Without held-out data, the scale is the training points' median
  nearest-neighbour distance.

  Returns:
    a list of warning sentences (empty when the samples are near the data).
  """
  factor = float(scfg.get("off_data_factor", 3.0))
  samples = np.asarray(gen.samples)[gen.ok]
  if not len(samples):
    return []
  train = np.unique(np.asarray(train).reshape(len(train), -1), axis=0)  # distinct points
  nearest = lambda q, ref: np.asarray(neighbours.nearest_two(jnp.asarray(q), jnp.asarray(ref)).d1)
  d_sample = nearest(samples, train)
  if held_out is not None and len(held_out):
    held = np.asarray(held_out).reshape(len(held_out), -1)
    d_sample = np.minimum(d_sample, nearest(samples, held))
    scale = nearest(held, train)
    what = "held-out points' median distance to the training set"
  else:
    scale = np.asarray(
      neighbours.knn(jnp.asarray(train), jnp.asarray(train), 1, exclude_self=True)[0]
    )
    what = "training points' median nearest-neighbour distance"
  ratio = float(np.median(d_sample) / max(float(np.median(scale)), 1e-30))
  if not ratio > factor:
    return []
  return [
    f"the generated samples lie far from both the training and the held-out data (median "
    f"distance {ratio:.1f}× the {what}): check the model's time convention (linear flow matching "
    "in memjax has noise at t = 0 and data at t = 1), schedule and parameterisation before "
    "reading anything below."
  ]


def copies_per_training_point(mem: Memorisation, train) -> dict:
  """How many memorised samples copy each training point, and how often it was trained on.

  Returns ``{"rows": [{"training_index", "copied_by", "multiplicity"}], ...}``, rows sorted by
  ``copied_by`` (most copied first, ties by training index), one per training point that at
  least one memorised sample (at the headline ``c``) has as its nearest point;
  ``training_index`` is the first row of that point in ``train``, ``multiplicity`` the number of
  rows of ``train`` equal to it.
  ``num_distinct_copied``, ``num_duplicated_in_train`` (distinct points appearing more than once)
  and ``num_duplicated_copied`` (of those, how many are copied) complete it.
  """
  flat = np.asarray(train).reshape(len(train), -1)
  _, first, inverse, counts = np.unique(
    flat, axis=0, return_index=True, return_inverse=True, return_counts=True
  )
  inverse = inverse.reshape(-1)
  flags = mem.memorised[memorisation.c_label(mem.c)]
  nearest = np.asarray(mem.nearest)[flags]
  ids, copied_by = np.unique(inverse[nearest], return_counts=True)
  order = np.lexsort((first[ids], -copied_by))  # most copied first, ties by training index
  rows = [
    {
      "training_index": int(first[ids[j]]),
      "copied_by": int(copied_by[j]),
      "multiplicity": int(counts[ids[j]]),
    }
    for j in order
  ]
  return {
    "rows": rows,
    "num_distinct_copied": int(len(ids)),
    "num_duplicated_in_train": int((counts > 1).sum()),
    "num_duplicated_copied": int((counts[ids] > 1).sum()),
  }


def _names(rows) -> str:
  return ", ".join(f"{n} ({d['auroc']:.2f})" for n, d in rows) or "none"


def verdict(summary: dict) -> str:
  """A plain-language paragraph of what the audit found, for the top of the report."""
  s = summary
  out = []
  if s.get("warnings"):
    out.append("Read the warnings above first: the numbers below may not mean what they say.")
  n, m = s["num_scored"], s["num_memorised"]
  c = s["c"]
  out.append(
    f"{m} of {n} generated samples ({m / max(n, 1):.0%}) are copies of a training point: their "
    f"nearest training point is much closer than the second nearest (d1² ≤ c d2², c = {c:.3g})."
  )
  if "M_c_vs_held_out" in s:
    d = s["M_c_vs_held_out"]
    held = s["M_c_held_out"][memorisation.c_label(c)]
    above = d["ci_lo"] > 0
    out.append(
      f"Held-out real data pass the same test {held:.0%} of the time; the difference "
      f"({d['difference']:+.2f}, 95% CI [{d['ci_lo']:+.2f}, {d['ci_hi']:+.2f}]) "
      + (
        "is above this chance floor."
        if above
        else "is NOT above this chance floor: "
        "the criterion alone does not show that this model memorises."
      )
    )
  cp = s.get("copies")
  if cp and cp["rows"]:
    top = cp["rows"][0]
    out.append(
      f"The copies reproduce {cp['num_distinct_copied']} distinct training point(s); the most "
      f"copied (training index {top['training_index']}) is reproduced by {top['copied_by']} "
      f"samples and appears {top['multiplicity']} time(s) in the training set"
      + (
        f"; {cp['num_duplicated_copied']} of the {cp['num_duplicated_in_train']} duplicated "
        "training points are copied."
        if cp["num_duplicated_in_train"]
        else "."
      )
    )
  det = list(s.get("detection", {}).items())
  if m in (0, n):
    out.append(
      "Every scored sample has the same label, so no detector can be judged on this audit "
      "(no detection evidence)."
    )
  elif det:
    sep, chance, inv = [], [], []
    for k, d in det:
      group = (
        sep if d["status"] == "separates" else inv if d["status"].startswith(INVERTED) else chance
      )
      group.append((k, d))
    out.append(
      "Detectors that tell the memorised generated samples from the others (AUROC, CI above "
      f"0.5): {_names(sep)}. At chance: {_names(chance)}. Inverted, not evidence: {_names(inv)}."
    )
  lid_note = s.get("lid", {}).get("lid_star", "estimable")
  if lid_note != "estimable":
    out.append(f"LID* and the MMH classes are {lid_note}.")
  elif isinstance(s.get("mmh_counts"), dict):
    mc = s["mmh_counts"]
    out.append(
      f"By the manifold memorisation hypothesis (rule {s['mmh_rule']!r}): "
      f"{mc.get('dd_mem', 0)} data-driven (DD-Mem: the data itself is low-dimensional there, "
      f"e.g. a duplicated point), {mc.get('od_mem', 0)} overfitting-driven (OD-Mem) and "
      f"{mc.get('other_mem', 0)} other memorised samples."
    )
  if "danger_zone" in s:
    dz = s["danger_zone"]
    out.append(
      f"Noise regimes of the training set: danger zone {dz['text']}"
      + (
        "."
        if dz["found"]
        else " (no noise level of the grid where both shell coverage C_σ and posterior "
        "concentration W_σ reach the threshold)."
      )
    )
  if "weight_space" in s:
    w = s["weight_space"]
    key = memorisation.c_label(c)
    ms = ", ".join(f"{k} {v[key]:.2f}" for k, v in w["M_c"].items() if key in v)
    out.append(f"Weight-space Laplace samples at η = {w['eta']:g}: M_c {ms}.")
  return " ".join(out)


def summarise(
  gen, mem, lid_res, regimes_res, weights, membership, detectors, cfg, *, train=None, schedule=None
) -> dict:
  """The headline numbers: M_c, detection per detector, MMH counts, the danger zone.

  ``detection``: every detector on the GENERATED samples against their ratio labels (the only
  detection evidence), each row with its a-priori direction, AUROC and bootstrap CI, TPR at
  ``cfg.summary.fpr`` and a status. ``detection_per_prompt`` (conditional models): the same
  over prompts. ``membership_baseline`` (with held-out data): training points against held-out
  real points through the same detectors — membership, reported apart, not detection evidence.
  """
  scfg = cfg.summary
  labels = mem.memorised[memorisation.c_label(mem.c)][gen.ok]
  det = {name: detection_row(name, s[gen.ok], labels, scfg) for name, s in detectors.items()}
  out = {
    "num_samples": int(len(gen.ok)),
    "num_scored": int(gen.ok.sum()),
    "solver": gen.summary,
    "c": mem.c,
    "M_c": mem.m_c,
    "num_memorised": int(labels.sum()),
    "fpr": float(scfg.fpr),
    "ci_level": float(scfg.ci_level),
    "detection": det,
  }
  if train is not None:
    out["copies"] = copies_per_training_point(mem, train)
  if gen.labels is not None:
    out["detection_per_prompt"] = per_prompt_rows(gen, labels, detectors, scfg)
  if membership is not None:
    diff = metrics.mean_diff_ci(
      labels,
      membership.held_memorised,
      num_resamples=int(scfg.bootstrap),
      level=float(scfg.ci_level),
    )
    rows = {}
    for name, (pos, neg) in membership.detectors.items():
      y = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
      rows[name] = detection_row(name, np.concatenate([pos, neg]), y, scfg)
    out["M_c_held_out"] = membership.m_c
    out["M_c_vs_held_out"] = {
      "difference": diff[0],
      "ci_lo": diff[1],
      "ci_hi": diff[2],
      "within_ci": bool(diff[1] <= 0.0 <= diff[2]),
    }
    out["membership_baseline"] = {
      "what": (
        "training points (positives) against held-out real points (negatives) through the "
        "same detectors: membership, not memorisation; never detection evidence"
      ),
      "num_train": membership.num_train,
      "num_held_out": int(len(membership.held_memorised)),
      "detectors": rows,
    }
  if lid_res is not None:
    out["lid"] = {
      "t0": lid_res.t0,
      "noise_to_signal": lid_res.t0_noise_to_signal,
      "t0_source": lid_res.t0_source,
      "knee_t0": lid_res.knee_t0,
      "knee_noise_to_signal": float(lid_res.noise_to_signal[lid_res.knee]),
      "knee_on_edge": lid_res.knee_on_edge,
      "lid_star": lid_res.lid_star_note or "estimable",
      "exact": lid_res.exact,
    }
    rule = cfg.lid.dd_rule
    out["mmh_rule"] = rule
    out["mmh_counts"] = lid_res.mmh_counts.get(rule, lid_res.lid_star_note)
    out["mmh_counts_by_rule"] = lid_res.mmh_counts or {r: lid_res.lid_star_note for r in MMH_RULES}
  if regimes_res is not None:
    out["danger_zone"] = _danger_zone(regimes_res, cfg.regimes, schedule)
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
  "sharpness": {"num_probes": 1, "chunk_size": 1, "exact_max_dim": 0, "num_noisy": 1},
  "regimes": {"num_sigmas": 2, "num_noise": 1, "profile_num_noise": 1},
  "weight_space": {
    "k": 1,
    "num_triples": 1,
    "lanczos_iters": 0,
    "num_posterior": 1,
    "geo_max_steps": 1,
  },
  "summary": {"bootstrap": 1},
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
  for section in (
    "sample",
    "memorisation",
    "lid",
    "sharpness",
    "regimes",
    "weight_space",
    "summary",
  ):
    for name, v in cfg[section].items():
      vals = v if isinstance(v, (tuple, list)) else (v,)
      for x in vals:
        if isinstance(x, float) and not np.isfinite(x):
          raise ValueError(f"`cfg.{section}.{name}` must be finite; got {v!r}.")
  memorisation.check_cs(tuple(cfg.memorisation.cs) + (cfg.memorisation.c,))
  if cfg.lid.t0_rule not in ("fixed", "knee"):
    raise ValueError(f"`cfg.lid.t0_rule` must be 'fixed' or 'knee'; got {cfg.lid.t0_rule!r}.")
  if cfg.lid.dd_rule not in MMH_RULES:
    raise ValueError(f"`cfg.lid.dd_rule` must be one of {MMH_RULES}; got {cfg.lid.dd_rule!r}.")
  if not float(cfg.lid.detection_noise_to_signal) > 0:
    raise ValueError(
      "`cfg.lid.detection_noise_to_signal` must be positive; got "
      f"{cfg.lid.detection_noise_to_signal!r}."
    )
  if not 0 < float(cfg.summary.ci_level) < 1:
    raise ValueError(f"`cfg.summary.ci_level` must be in (0, 1); got {cfg.summary.ci_level!r}.")


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
      danger zone need them, and (``cfg.summary.membership_baseline``) they are scored against
      training points in the membership baseline (:func:`membership_lens`), reported apart
      from detection.
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
  names = ("noise", "lid", "sharp", "regimes", "weights", "member")
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
    det_t0 = detection_time(model, cfg.lid) if lid_res is None else lid_res.t0
    names, times = detector_times(model, det_t0, cfg.sharpness)
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
  member = None
  if held_out is not None and cfg.summary.membership_baseline:
    with _lens("membership baseline", 1, progress, timings):
      member = membership_lens(model, held_out, train, lid_res, keys["member"], cfg, mesh)
  detectors = detector_scores(lid_res, sharp, guidance)
  summary = summarise(
    gen, mem, lid_res, reg, weights, member, detectors, cfg, train=train, schedule=model.schedule
  )
  summary["warnings"] = off_data_warnings(gen, train, held_out, cfg.summary)
  summary["verdict"] = verdict(summary)
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
    member,
    detectors,
    summary,
    train,
  )
