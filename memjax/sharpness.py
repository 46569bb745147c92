"""Sharpness of the log-density ``log p_t``: Hessian spectra, traces, detectors and SAIL.

For a score field ``s(x, t) = ∇_x log p_t(x)`` the Hessian of the log-density is
``H(x, t) = ∇_x s(x, t)`` (``D × D``), never materialised: every function uses ``jax.linearize``
(one forward pass, then JVPs ``H v``) and its transpose (VJPs ``Hᵀ v``).

**Symmetrisation.** The exact ``H`` is symmetric, but a *learned* score is not a gradient field,
so ``∇_x s_θ`` need not be symmetric. Lanczos needs a symmetric operator, so spectra are those
of ``H_sym = ½(H + Hᵀ)`` (one JVP + one VJP per product). ``H_sym`` has the same trace and the
same quadratic form ``vᵀHv`` as ``H``, and equals ``H`` whenever the field is conservative.
(Arnoldi on ``H`` would give complex Ritz values with no ordering meaning "sharpest direction".)

Sharpness scores (larger = sharper = more likely memorised): ``−tr H``, ``−λ_min(H_sym)`` and
``||s||²``; Gaussian lemma: for ``p_t = N(m, C)``, ``E||s||² = tr C⁻¹ = −tr H``.

Conditional models (classifier-free guidance) use ``s^Δ(x, t, c) = s(x, t, c) − s(x, t, ∅)``:

* Wen et al.: ``||ε̂(x_t, c) − ε̂(x_t, ∅)||`` (and the velocity analogue
  ``||u(x_t, c) − u(x_t, ∅)||``);
* the paper's detector ``||H^Δ s^Δ||²`` with ``H^Δ = ∇_x s^Δ`` (one forward pass + one JVP);

both evaluated at the first sampling step and averaged over ``n`` generations.

SAIL (sharpness-aware initialisation) minimises over the initial noise ``x_T``, by default in
the form of the authors' released code (unit step, unsquared norms),

    L(x_T) = ||g(y + g(y)/||g(y)||)|| + α ||x_T||,     y = state_fn(x_T),

with ``g = s^Δ(·, t_s, c)`` evaluated at the state ``y`` the sampler reaches at ``t_s`` from
``x_T`` (on-distribution), in rounds of 10 Adam steps (lr 0.05) with re-seeding of latents not
below the threshold and a threshold that rises every 3 rounds. The finite-difference objective
``||g(x + δg(x)) − g(x)||² + α||x||²`` (``≈ δ²||H^Δ s^Δ||² − 2α log N(x; 0, I)``) is kept as
``objective="finite_difference"``.

Conventions: per-point functions take ``x`` of shape ``(D,)`` and a scalar ``t``;
``score_fn(x (D,), t ()) -> (D,)``; build one from a batched network field with
:func:`memjax.paths.point_fn` / :func:`memjax.paths.point_cond_fn`.

References:
  Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
  Probability Landscapes", arXiv:2412.04140; Wen et al., "Detecting, Explaining, and Mitigating
  Memorization in Diffusion Models", ICLR 2024.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from memjax import _checks, linalg, paths

Array = jax.Array
PointField = paths.PointField


def _check_point(x):
  _checks.check_ndim("x", x, 1, "(D,)")
  _checks.check_finite("x", x)


# ---------------------------------------------------------------------------
# Hessian operators of one point.


def symmetrised_hessian(
  score_fn: PointField, x: Array, t
) -> tuple[Array, Callable[[Array], Array]]:
  """``(s(x, t), v ↦ ½(H + Hᵀ) v)``, ``H = ∇_x s(x, t)``, by ``jax.linearize`` and its transpose.

  One JVP and one VJP per product; no ``D × D`` matrix.

  Args:
    score_fn: a point score ``s(x (D,), t ()) -> (D,)``.
    x: point ``(D,)``.
    t: scalar time.

  Returns:
    ``(s(x, t) (D,), matvec)`` with ``matvec: (D,) -> (D,)``.
  """
  s, jvp = jax.linearize(lambda y: score_fn(y, t), x)
  vjp = jax.linear_transpose(jvp, x)
  return s, lambda v: 0.5 * (jvp(v) + vjp(v)[0])


class Spectrum(NamedTuple):
  """Extreme eigenvalues of ``H_sym = ½(H + Hᵀ)`` at one point (batched: leading axes added).

  Attributes:
    top: ``(k,)`` largest eigenvalues, descending.
    bottom: ``(k,)`` smallest (most negative = sharpest) eigenvalues, ascending.
  """

  top: Array  # (k,) largest eigenvalues, descending
  bottom: Array  # (k,) smallest (most negative = sharpest) eigenvalues, ascending


def hessian_eigs(
  score_fn: PointField, x: Array, t, k: int, key: Array, num_iters: int | None = None
) -> Spectrum:
  """Top-k and bottom-k eigenvalues of ``H_sym = ½(H + Hᵀ)``, ``H = ∇_x s(x, t)``, by Lanczos.

  Two Lanczos runs (:func:`memjax.linalg.lanczos_topk`) of ``num_iters`` steps on ``+H_sym`` and
  ``−H_sym``.

  Args:
    score_fn: a point score ``s(x (D,), t ()) -> (D,)``.
    x: point ``(D,)``.
    t: scalar time.
    k: eigenvalues at each end.
    key: PRNG key of the Lanczos start vectors.
    num_iters: Lanczos depth (default ``min(D, 2k + 10)``).

  Returns:
    :class:`Spectrum` with fields of shape ``(k,)``.

  Raises:
    ValueError: if ``x`` is not ``(D,)`` or ``k``/``num_iters`` are out of range.

  References:
    Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
    Probability Landscapes", arXiv:2412.04140.
  """
  _check_point(x)
  _, mv = symmetrised_hessian(score_fn, x, t)
  d = x.shape[0]
  k_top, k_bot = jax.random.split(key)
  top = linalg.lanczos_topk(mv, d, k, k_top, num_iters, dtype=x.dtype).values
  bottom = -linalg.lanczos_topk(lambda v: -mv(v), d, k, k_bot, num_iters, dtype=x.dtype).values
  return Spectrum(top, bottom)


def hessian_trace(
  score_fn: PointField,
  x: Array,
  t,
  key: Array | None = None,
  num_probes: int | None = None,
  chunk_size: int = 64,
) -> tuple[Array, Array]:
  """``tr H(x, t)`` and its standard error: exact (``D`` JVPs, sem 0) or Hutchinson.

  ``tr H = tr H_sym``, so the JVP of ``H`` alone is used. The exact trace is
  :func:`memjax.linalg.exact_trace` (``chunk_size`` JVPs at a time); with ``num_probes`` it is
  :func:`memjax.linalg.hutchinson_trace`.

  Args:
    score_fn: a point score ``s(x (D,), t ()) -> (D,)``.
    x: point ``(D,)``.
    t: scalar time.
    key: PRNG key (required with ``num_probes``).
    num_probes: ``None`` for the exact trace, else the number of Hutchinson probes.
    chunk_size: JVPs vmapped at once in the exact trace.

  Returns:
    ``(trace, sem)``, two scalars.

  Raises:
    ValueError: if ``x`` is not ``(D,)``, or ``num_probes`` is given without ``key``.
  """
  _check_point(x)
  f = lambda y: score_fn(y, t)
  if num_probes is None:
    _, tr = linalg.exact_trace(f, x, chunk_size)
    return tr, jnp.zeros((), x.dtype)
  if key is None:
    raise ValueError("`key` is required when `num_probes` is given (Hutchinson estimate).")
  _, jvp = jax.linearize(f, x)
  return linalg.hutchinson_trace(jvp, x.shape[0], key, num_probes, dtype=x.dtype)


def score_norm_sq(score_fn: PointField, x: Array, t) -> Array:
  """``||s(x, t)||²`` at one point.

  Args:
    score_fn: a point score ``s(x (D,), t ()) -> (D,)``.
    x: point ``(D,)``.
    t: scalar time.

  Returns:
    Scalar.
  """
  return jnp.sum(score_fn(x, t) ** 2)


class Profile(NamedTuple):
  """Sharpness of ``N`` points at ``T`` times: eigenvalues of ``H_sym``, ``tr H`` and ``||s||²``.

  Attributes:
    top: ``(T, N, k)`` largest eigenvalues of ``H_sym``.
    bottom: ``(T, N, k)`` smallest eigenvalues of ``H_sym``.
    trace: ``(T, N)`` ``tr H`` (exact, or Hutchinson with ``num_probes``).
    score_sq: ``(T, N)`` ``||s||²``.
  """

  top: Array  # (T, N, k)
  bottom: Array  # (T, N, k)
  trace: Array  # (T, N) exact tr H, or Hutchinson with `num_probes`
  score_sq: Array  # (T, N)


def sharpness_profile(
  score_fn: PointField,
  xs: Array,
  ts: Array,
  key: Array,
  k: int = 2,
  num_iters: int | None = None,
  num_probes: int | None = None,
) -> Profile:
  """All sharpness quantities vmapped over points and times.

  Args:
    score_fn: a point score ``s(x (D,), t ()) -> (D,)``.
    xs: points ``(N, D)`` (the same at every time) or ``(T, N, D)`` (one set per time).
    ts: times ``(T,)``.
    key: PRNG key (Lanczos start vectors, Hutchinson probes).
    k: eigenvalues at each end of the spectrum.
    num_iters: Lanczos depth.
    num_probes: Hutchinson probes for the trace (``None``: exact).

  Returns:
    :class:`Profile`.

  Raises:
    ValueError: if ``xs`` is not ``(N, D)`` or ``(T, N, D)``, ``ts`` is not ``(T,)`` or they
      disagree, or ``xs`` holds NaN/inf.
  """
  _checks.check_ndim("xs", xs, (2, 3), "(N, D) or (T, N, D)")
  _checks.check_ndim("ts", ts, 1, "(T,)")
  _checks.check_finite("xs", xs)
  if xs.ndim == 3 and xs.shape[0] != ts.shape[0]:
    raise ValueError(
      f"`xs` of shape (T, N, D) must match `ts` (T,); got {xs.shape} and {ts.shape}."
    )

  return _profile_jit(score_fn, int(k), num_iters, num_probes, xs, jnp.asarray(ts), key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _profile_jit(score_fn, k, num_iters, num_probes, xs, ts, key):
  def one(x, t, kk):
    ke, kt = jax.random.split(kk)
    spec = hessian_eigs(score_fn, x, t, k, ke, num_iters)
    tr, _ = hessian_trace(score_fn, x, t, kt, num_probes)
    return spec.top, spec.bottom, tr, score_norm_sq(score_fn, x, t)

  def at_time(x_t, t, kk):
    keys = jax.random.split(kk, x_t.shape[0])
    return jax.vmap(one, in_axes=(0, None, 0))(x_t, t, keys)

  keys = jax.random.split(key, ts.shape[0])
  x_axis = 0 if xs.ndim == 3 else None
  return Profile(*jax.vmap(at_time, in_axes=(x_axis, 0, 0))(xs, ts, keys))


# ---------------------------------------------------------------------------
# Conditional (classifier-free guidance) detectors.


def score_delta(cond_score, x: Array, t, c, null) -> Array:
  """The guidance score ``s^Δ(x, t, c) = s(x, t, c) − s(x, t, ∅)``.

  Args:
    cond_score: a conditional point score ``s(x (D,), t (), c ()) -> (D,)``
      (:func:`memjax.paths.point_cond_fn`).
    x: point ``(D,)``.
    t: scalar time.
    c: the label.
    null: the null label ``∅``.

  Returns:
    ``(D,)``.
  """
  return cond_score(x, t, c) - cond_score(x, t, null)


def wen_metric(cond_field, x: Array, t, c, null) -> Array:
  """Wen et al.'s detector ``||f(x, t, c) − f(x, t, ∅)||`` for a per-point field ``f``.

  Pass the ε-prediction for the original metric and the velocity ``u`` for its FM analogue.

  Args:
    cond_field: a conditional point field ``f(x (D,), t (), c ()) -> (D,)``.
    x: point ``(D,)``.
    t: scalar time.
    c: the label.
    null: the null label ``∅``.

  Returns:
    Scalar.

  References:
    Wen et al., "Detecting, Explaining, and Mitigating Memorization in Diffusion Models",
    ICLR 2024.
  """
  return jnp.linalg.norm(cond_field(x, t, c) - cond_field(x, t, null))


def hs_detector(cond_score, x: Array, t, c, null) -> Array:
  """The paper's detector ``||H^Δ s^Δ||²``, ``H^Δ = ∇_x s^Δ(x, t, c)``: one linearisation + one JVP.

  Args:
    cond_score: a conditional point score ``s(x (D,), t (), c ()) -> (D,)``.
    x: point ``(D,)``.
    t: scalar time (a fixed early sampling time; see the user guide).
    c: the label.
    null: the null label ``∅``.

  Returns:
    Scalar.

  References:
    Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
    Probability Landscapes", arXiv:2412.04140.
  """
  sd, jvp = jax.linearize(lambda y: score_delta(cond_score, y, t, c, null), x)
  return jnp.sum(jvp(sd) ** 2)


def averaged_over_generations(metric: Callable[[Array], Array], xs: Array) -> Array:
  """``(1/n) Σ_i metric(x_i)`` over ``n`` generations of the same condition.

  Args:
    metric: a scalar per-point detector ``x (D,) -> ()``.
    xs: generations ``(n, D)``.

  Returns:
    Scalar.

  Raises:
    ValueError: if ``xs`` is not ``(n, D)``.
  """
  _checks.check_ndim("xs", xs, 2, "(n, D)")
  return jnp.mean(jax.vmap(metric)(xs))


# ---------------------------------------------------------------------------
# SAIL.

#: The SAIL objectives of :func:`sail`.
OBJECTIVES = ("official", "finite_difference")


def _safe_norm(v: Array) -> Array:
  """``||v||`` with a finite gradient at ``v = 0`` (where it is 0)."""
  sq = jnp.sum(v**2)
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def sail_objective(g: Callable[[Array], Array], x: Array, alpha: float, delta: float) -> Array:
  """Finite-difference SAIL objective ``L(x) = ||g(x + δ g(x)) − g(x)||² + α ||x||²``.

  The ``objective="finite_difference"`` option of :func:`sail` (with ``state_fn`` the identity).
  With ``g = s^Δ(·, t, c)`` it is ``δ² ||H^Δ s^Δ||² − 2α log N(x; 0, I)`` up to a constant and
  ``O(δ³)``. It is NOT the authors' form; see :func:`sail_objective_official`.

  Args:
    g: the guidance field ``x (D,) -> (D,)``.
    x: initial noise ``(D,)``.
    alpha: prior weight ``α``.
    delta: finite-difference step ``δ``.

  Returns:
    Scalar.
  """
  gx = g(x)
  return jnp.sum((g(x + delta * gx) - gx) ** 2) + alpha * jnp.sum(x**2)


def sail_objective_official(
  g: Callable[[Array], Array], x: Array, alpha: float, delta: float = 1.0
) -> Array:
  """The released SAIL loss ``||g(x + δ g(x)/||g(x)||)|| + α ||x||`` (unsquared norms, ``δ = 1``).

  With ``g = s^Δ`` this is ``||s^Δ + δ H^Δ ŝ^Δ + O(δ²)||``: the guidance signal one unit step
  along itself. Note: the released SD v1 code uses the ε-difference ``ε̂_c − ε̂_∅ = −σ_t s^Δ`` for
  ``g`` (so its step goes along ``−ŝ^Δ`` and its norm is ``σ_t ||s^Δ||``); pass that field to
  reproduce it. The code also computes the step direction once per round at the round's first
  latent; here (as in the paper's Algorithm 2) it is recomputed at every iterate.

  Args:
    g: the guidance field ``x (D,) -> (D,)``.
    x: initial noise (or the state it flows to) ``(D,)``.
    alpha: prior weight ``α``.
    delta: step length ``δ``.

  Returns:
    Scalar.

  References:
    Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
    Probability Landscapes", arXiv:2412.04140.
  """
  gx = g(x)
  step = gx / jnp.maximum(_safe_norm(gx), jnp.finfo(gx.dtype).tiny)
  return _safe_norm(g(x + delta * step)) + alpha * _safe_norm(x)


def _sail_loss(objective, g, state_fn, x, alpha, delta):
  """The SAIL loss of latent ``x``: ``g`` is evaluated at the state ``state_fn(x)``; the prior term
  stays on ``x``."""
  y = x if state_fn is None else state_fn(x)
  prior_sq = jnp.sum(x**2)
  if objective == "official":
    return sail_objective_official(g, y, 0.0, delta) + alpha * _safe_norm(x)
  return sail_objective(g, y, 0.0, delta) + alpha * prior_sq


class SailResult(NamedTuple):
  """The outcome of :func:`sail` per latent.

  Attributes:
    x: ``(N, D)`` optimised initial noise (the accepted latent when converged).
    losses: ``(N, max_iters + 1)`` ``L`` at each step (a re-seeded slot restarts; frozen once done).
    iterations: ``(N,)`` Adam steps taken, all rounds together (``max_iters`` if never converged).
    converged: ``(N,)`` bool: ``L ≤`` the round's threshold was reached.
    rounds: ``(N,)`` rounds used (1 = accepted from the first latent; reseeds = rounds − 1).
    threshold: ``(N,)`` threshold in force when accepted (or at the end).
    initial_threshold: ``()`` threshold of round 0 (absolute, or ``threshold_rel`` × median
      ``L(x0)``).
  """

  x: Array  # (N, D) optimised initial noise (the accepted latent when converged)
  losses: Array  # (N, max_iters + 1) L at each step (a re-seeded slot restarts; frozen once done)
  iterations: Array  # (N,) Adam steps taken, all rounds together (max_iters if never converged)
  converged: Array  # (N,) bool: L ≤ the round's threshold was reached
  rounds: Array  # (N,) rounds used (1 = accepted from the first latent; reseeds = rounds − 1)
  threshold: Array  # (N,) threshold in force when accepted (or at the end)
  initial_threshold: Array  # () threshold of round 0 (absolute, or threshold_rel × median L(x0))


def sail(
  g: Callable[[Array], Array],
  x0: Array,
  *,
  objective: str = "official",
  state_fn: Callable[[Array], Array] | None = None,
  alpha: float = 0.05,
  delta: float | None = None,
  threshold: float | None = None,
  threshold_rel: float = 0.5,
  threshold_rise: float = 0.0125,
  rounds_per_rise: int = 3,
  steps_per_round: int = 10,
  lr: float = 0.05,
  max_iters: int = 100,
  key: Array | None = None,
  cond: Array | None = None,
) -> SailResult:
  """SAIL: Adam on each initial noise ``x0[n]`` until ``L(x) = ||g(y + ĝ(y))|| + α||x||`` is low.

  ``objective="official"`` (default): ``L(x) = ||g(y + δ ĝ(y))|| + α ||x||``, ``ĝ = g/||g||``,
  ``δ = 1`` (:func:`sail_objective_official`, the authors' released code);
  ``"finite_difference"``: ``||g(y + δ g(y)) − g(y)||² + α ||x||²`` (:func:`sail_objective`,
  default ``δ = 0.1``). ``y = state_fn(x)`` is the state at which ``g`` is evaluated: pass the
  sampler's map from the initial noise to its state at ``t_s`` so that ``g`` (e.g.
  ``s^Δ(·, t_s, c)``) is evaluated ON-distribution; ``None`` = identity (``g`` at the noise itself,
  right only where ``x`` is a sample of ``p_{t_s}``, e.g. SD's first step). The prior term is on
  ``x``.

  Rounds (the released code's protocol): ``steps_per_round`` Adam steps per round; a latent is
  accepted (frozen) at the first iterate with ``L ≤ thr_r``; at the end of a round every latent not
  yet accepted is RE-SEEDED with fresh ``N(0, I)`` noise (Adam state reset; keys from ``key``,
  default ``PRNGKey(0)``); every ``rounds_per_rise`` rounds the threshold rises:
  ``thr_r = thr_0 + threshold_rise |thr_0| ⌊r / rounds_per_rise⌋`` (the code adds 0.1 to 8.2 every
  3 rounds: ``threshold_rise ≈ 0.0125``). ``thr_0 = threshold`` if given, else
  ``threshold_rel × median_n L(x0[n])`` (relative to the plain-noise loss). Latents still not
  accepted after ``max_iters`` steps are returned with ``converged = False`` (callers should
  discard or report them). ``steps_per_round ≥ max_iters`` gives a single round without
  re-seeding.

  Args:
    g: the guidance field ``y (D,) -> (D,)`` (or ``g(y, cond)`` with ``cond``).
    x0: initial noises ``(N, D)``.
    objective: ``"official"`` or ``"finite_difference"``.
    state_fn: ``x -> y``, the sampler's map from the noise to the state at ``t_s`` (``None``:
      identity); ``state_fn(x, cond)`` with ``cond``.
    alpha: prior weight ``α ≥ 0``.
    delta: step ``δ`` (default 1 for the official objective, 0.1 for the finite-difference one).
    threshold: absolute round-0 threshold (default: relative, below).
    threshold_rel: round-0 threshold as a fraction of the median plain-noise loss.
    threshold_rise: relative rise of the threshold every ``rounds_per_rise`` rounds.
    rounds_per_rise: rounds between rises.
    steps_per_round: Adam steps per round.
    lr: Adam learning rate.
    max_iters: total step budget per latent.
    key: PRNG key of the re-seeding noise (default ``PRNGKey(0)``).
    cond: optional per-latent condition with leading axis ``N`` (e.g. each latent's prompt).

  Returns:
    :class:`SailResult`.

  Raises:
    ValueError: if ``x0`` is not ``(N, D)`` or holds NaN/inf, ``objective`` is unknown, a count is
      below 1, ``lr`` or ``delta`` is not positive, ``alpha < 0``, or ``cond`` has the
      wrong leading axis.

  References:
    Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
    Probability Landscapes", arXiv:2412.04140.
  """
  _checks.check_ndim("x0", x0, 2, "(N, D)")
  _checks.check_finite("x0", x0)
  if objective not in OBJECTIVES:
    raise ValueError(f"`objective` must be one of {OBJECTIVES}; got {objective!r}.")
  for name, v in (
    ("max_iters", max_iters),
    ("steps_per_round", steps_per_round),
    ("rounds_per_rise", rounds_per_rise),
  ):
    if not (isinstance(v, int) and v >= 1):
      raise ValueError(f"`{name}` must be an int >= 1; got {v!r}.")
  if delta is None:
    delta = 1.0 if objective == "official" else 0.1
  for name, v in (("lr", lr), ("delta", delta)):
    _checks.check_positive(name, v)
  if alpha < 0:
    raise ValueError(f"`alpha` must be >= 0; got {alpha}.")
  dt = x0.dtype
  as_arr = lambda v: jnp.asarray(v, dt)
  key = jax.random.PRNGKey(0) if key is None else key
  thr = (
    jnp.asarray(jnp.nan, dt) if threshold is None else as_arr(threshold)
  )  # NaN: relative threshold, set inside
  has_cond = cond is not None
  if has_cond and jax.tree.leaves(cond)[0].shape[0] != x0.shape[0]:
    raise ValueError(f"`cond` must have a leading axis of N = {x0.shape[0]}.")
  return _sail(
    g,
    state_fn,
    objective,
    has_cond,
    int(max_iters),
    int(min(steps_per_round, max_iters)),
    int(rounds_per_rise),
    x0,
    as_arr(alpha),
    as_arr(delta),
    thr,
    as_arr(threshold_rel),
    as_arr(threshold_rise),
    as_arr(lr),
    key,
    jnp.zeros(x0.shape[:1]) if cond is None else cond,
  )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6))
def _sail(
  g,
  state_fn,
  objective,
  has_cond,
  max_iters,
  spr,
  rpr,
  x0,
  alpha,
  delta,
  thr,
  thr_rel,
  rise,
  lr,
  key,
  cond,
):
  opt = optax.adam(lr)

  def loss_fn(x, c):
    if not has_cond:
      return _sail_loss(objective, g, state_fn, x, alpha, delta)
    sf = None if state_fn is None else (lambda z: state_fn(z, c))
    return _sail_loss(objective, lambda y: g(y, c), sf, x, alpha, delta)

  loss_grad = jax.value_and_grad(loss_fn)
  l0 = jax.vmap(loss_fn)(x0, cond)
  thr0 = jnp.where(jnp.isnan(thr), thr_rel * jnp.median(l0), thr)
  thr_of = lambda r: thr0 + rise * jnp.abs(thr0) * (r // rpr)

  def one(x, k, c):
    def step(carry, j):
      x, state, done, iters = carry
      r = j // spr
      reseed = (j > 0) & (j % spr == 0) & ~done
      fresh = jax.random.normal(jax.random.fold_in(k, r), x.shape, x.dtype)
      x = jnp.where(reseed, fresh, x)
      state = jax.tree.map(lambda a, b: jnp.where(reseed, a, b), opt.init(x), state)
      loss, grad = loss_grad(x, c)
      done = done | (loss <= thr_of(r))
      upd, new_state = opt.update(grad, state, x)
      x = jnp.where(done, x, optax.apply_updates(x, upd))
      state = jax.tree.map(lambda a, b: jnp.where(done, a, b), state, new_state)
      return (x, state, done, iters + (~done).astype(jnp.int32)), (loss, done)

    init = (x, opt.init(x), jnp.asarray(False), jnp.asarray(0, jnp.int32))
    (x, _, done, iters), (losses, dones) = jax.lax.scan(step, init, jnp.arange(max_iters))
    final = loss_fn(x, c)
    last_round = (max_iters - 1) // spr
    # Round of acceptance: the round of the first step flagged done (else the last round).
    first = jnp.argmax(dones)
    r_acc = jnp.where(done, first // spr, last_round)
    thr_end = thr_of(r_acc)
    conv = done | (final <= thr_end)
    return x, jnp.concatenate([losses, final[None]]), iters, conv, r_acc + 1, thr_end

  keys = jax.random.split(key, x0.shape[0])
  return SailResult(*jax.vmap(one)(x0, keys, cond), thr0)


class LemmaCheck(NamedTuple):
  """Monte-Carlo check of ``E_{p_t}||s||² = −E_{p_t} tr ∇s`` at one time (scalars).

  Attributes:
    mean_score_sq: ``E||s(y, t)||²``.
    mean_neg_trace: ``−E tr H(y, t)``.
    gap: ``E||s||² + E tr H``.
    gap_sem: standard error of the gap.
    rel_gap: ``gap / E||s||²``.
  """

  mean_score_sq: Array  # E||s(y, t)||²
  mean_neg_trace: Array  # −E tr H(y, t)
  gap: Array  # E||s||² + E tr H
  gap_sem: Array  # standard error of the gap
  rel_gap: Array  # gap / E||s||²


def lemma_check(score_fn: PointField, ys: Array, t) -> LemmaCheck:
  """Integration-by-parts identity ``E||∇log p_t||² = −E tr ∇² log p_t`` on samples ``ys ~ p_t``.

  It holds for the true score of any smooth, decaying density (Gaussian data is the closed-form
  case tested in float64); for a learned score the gap measures how far the model is from being a
  gradient field of a normalised density.

  Args:
    score_fn: a point score ``s(x (D,), t ()) -> (D,)``.
    ys: ``(N, D)`` draws of ``x_t`` (e.g. ``ψ(t) x + σ(t) ε`` with ``x`` from the data).
    t: scalar time.

  Returns:
    :class:`LemmaCheck`.

  Raises:
    ValueError: if ``ys`` is not ``(N, D)`` or holds NaN/inf.
  """
  _checks.check_ndim("ys", ys, 2, "(N, D)")
  _checks.check_finite("ys", ys)
  sq = jax.vmap(lambda y: score_norm_sq(score_fn, y, t))(ys)
  tr = jax.vmap(lambda y: hessian_trace(score_fn, y, t)[0])(ys)
  diff = sq + tr
  n = ys.shape[0]
  gap = jnp.mean(diff)
  return LemmaCheck(
    jnp.mean(sq), -jnp.mean(tr), gap, jnp.std(diff) / jnp.sqrt(n), gap / jnp.mean(sq)
  )
