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

    L(x_T) = ||g(y + δ g(y)/||g(y)||)|| + α ||x_T||,     y = state_fn(x_T),

with ``g`` the ε-difference ``ε̂(y, c) − ε̂(y, ∅) = −σ_t s^Δ`` (:func:`sail_field`; the released
code's direction — with ``g = +s^Δ`` the loss has false minima) evaluated at the state ``y``, in
rounds of 10 Adam steps (lr 0.05) with re-seeding of latents not below the threshold and a
threshold that rises every 3 rounds (:data:`SD_V1`: 8.2 + 0.1, α = 0.05, δ = 1 on SD's
16,384-dim latent; rescale them for another dimension). ``project=True`` keeps the iterates on
the typical shell ``||x|| = √D`` (:func:`project_to_shell`). Re-seeding makes SAIL partly
rejection sampling; :func:`rejection_control` is its control without gradients (plain noise
re-drawn under the same loss and threshold, at equal compute). The finite-difference objective
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
import numpy as np
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

#: The directions of the guidance field ``g`` for SAIL (:func:`sail_field`).
DIRECTIONS = ("eps", "score")

#: The settings of the authors' released Stable Diffusion v1 code (``mitigate_mem.py`` and
#: ``local_model/pipe.py`` of the official repository): latent dimension ``4·64·64``, prior weight
#: ``α``, unit step ``δ``, Adam ``lr``, steps per round, the absolute threshold ``8.2`` and its rise
#: ``+0.1`` every 3 failed rounds (the initial latents are re-drawn from a new seed only at those
#: rises; in between a failed round restarts from the same seeded latents). Stable Diffusion v2
#: uses ``α = 0.01``.
SD_V1 = dict(
  dim=16384,
  alpha=0.05,
  delta=1.0,
  lr=0.05,
  steps_per_round=10,
  threshold=8.2,
  threshold_step=0.1,
  rounds_per_rise=3,
)


def _safe_norm(v: Array) -> Array:
  """``||v||`` with a finite gradient at ``v = 0`` (where it is 0)."""
  sq = jnp.sum(v**2)
  pos = sq > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def sail_field(
  score_delta_fn: Callable[[Array], Array], sigma, direction: str = "eps"
) -> Callable[[Array], Array]:
  """The guidance field ``g`` SAIL steps along: the ε-difference (default) or ``s^Δ`` itself.

  ``direction="eps"``: ``g(y) = ε̂(y, c) − ε̂(y, ∅) = −σ_t s^Δ(y)`` (``ε̂ = −σ_t s``), the field the
  authors' released Stable Diffusion v1 code uses (their ``c_pred − uc_pred`` of the ε-network),
  so :func:`sail_objective_official`'s unit step goes along ``−ŝ^Δ``. ``direction="score"``:
  ``g = s^Δ``, a step along ``+ŝ^Δ``. The two differ by the sign of the step (and the factor
  ``σ_t``): with ``s^Δ(y) = −y`` in 1-D the official loss is ``σ_t(|y| + 1)`` (``y ≠ 0``) for
  ``"eps"``, minimised only at 0, and ``||y| − 1|`` for ``"score"``, with false minima on
  ``|y| = 1``.

  Args:
    score_delta_fn: ``y (D,) -> s^Δ(y) (D,)`` at the SAIL time ``t_s`` (or the score ``s(y, t_s)``
      of an unconditional model, whose ε-prediction is ``−σ_t s``).
    sigma: ``σ(t_s) > 0`` of the schedule (only used with ``"eps"``).
    direction: ``"eps"`` or ``"score"``.

  Returns:
    ``g: y (D,) -> (D,)``.

  Raises:
    ValueError: if ``direction`` is unknown or ``sigma`` is not positive.

  References:
    Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
    Probability Landscapes", arXiv:2412.04140.
  """
  if direction not in DIRECTIONS:
    raise ValueError(f"`direction` must be one of {DIRECTIONS}; got {direction!r}.")
  if direction == "score":
    return score_delta_fn
  if _checks.is_concrete(sigma):
    _checks.check_positive("sigma", float(sigma))
  return lambda y: -sigma * score_delta_fn(y)


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
  along itself. The released SD v1 code uses the ε-difference ``ε̂_c − ε̂_∅ = −σ_t s^Δ`` for
  ``g`` (so its step goes along ``−ŝ^Δ`` and its norm is ``σ_t ||s^Δ||``): build it with
  :func:`sail_field` (``direction="eps"``, the default there). With ``g = +s^Δ`` the loss has
  false minima (``s^Δ = −y`` in 1-D: zeros on ``|y| = 1``). The code also computes the step
  direction once per round at the round's first latent; here (as in the paper's Algorithm 2) it
  is recomputed at every iterate.

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


def _sharpness_term(objective, g, state_fn, x, delta):
  """The sharpness part of the SAIL loss of latent ``x`` (``g`` at the state ``state_fn(x)``)."""
  y = x if state_fn is None else state_fn(x)
  if objective == "official":
    return sail_objective_official(g, y, 0.0, delta)
  return sail_objective(g, y, 0.0, delta)


def _prior(objective, x):
  """The SAIL prior term of latent ``x``: ``||x||`` (official) or ``||x||²``."""
  return _safe_norm(x) if objective == "official" else jnp.sum(x**2)


def _sail_loss(objective, g, state_fn, x, alpha, delta):
  """The SAIL loss of latent ``x``: ``g`` is evaluated at the state ``state_fn(x)``; the prior term
  stays on ``x``."""
  return _sharpness_term(objective, g, state_fn, x, delta) + alpha * _prior(objective, x)


def _latent_loss(g, state_fn, objective, has_cond, alpha, delta, x, c):
  """:func:`_sail_loss` of one latent ``x`` with its condition ``c`` bound (when there is one):
  the score shared by :func:`sail` and :func:`rejection_control`."""
  gg, sf = _bind(g, state_fn, has_cond, c)
  return _sail_loss(objective, gg, sf, x, alpha, delta)


def _default_delta(objective, delta):
  """``δ`` as given, else the objective's default: 1 (official), 0.1 (finite difference)."""
  if delta is not None:
    return delta
  return 1.0 if objective == "official" else 0.1


def _check_sail_args(x0, objective, counts, positives, alpha, threshold, threshold_step, cond):
  _checks.check_ndim("x0", x0, 2, "(N, D)")
  _checks.check_finite("x0", x0)
  if objective not in OBJECTIVES:
    raise ValueError(f"`objective` must be one of {OBJECTIVES}; got {objective!r}.")
  for name, v in counts:
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
      raise ValueError(f"`{name}` must be an int >= 1; got {v!r}.")
  for name, v in positives:
    _checks.check_positive(name, v)
  if not (float(alpha) >= 0 and np.isfinite(float(alpha))):
    raise ValueError(f"`alpha` must be finite and >= 0; got {alpha}.")
  for name, v in (("threshold", threshold), ("threshold_step", threshold_step)):
    if v is not None and not np.isfinite(float(v)):
      raise ValueError(f"`{name}` must be finite; got {v}.")
  if cond is not None and jax.tree.leaves(cond)[0].shape[0] != x0.shape[0]:
    raise ValueError(f"`cond` must have a leading axis of N = {x0.shape[0]}.")


def _threshold_fn(l0, thr, thr_rel, rise, step, rpr):
  """``(thr_0, r ↦ thr_r)``: absolute (``thr``) or relative (``thr_rel`` × median ``l0``) start;
  rise ``step`` (absolute, when finite) or ``rise |thr_0|`` every ``rpr`` rounds."""
  thr0 = jnp.where(jnp.isnan(thr), thr_rel * jnp.median(l0), thr)
  inc = jnp.where(jnp.isnan(step), rise * jnp.abs(thr0), step)
  return thr0, lambda r: thr0 + inc * (r // rpr)


def sail_loss_terms(
  g: Callable[[Array], Array],
  x: Array,
  *,
  objective: str = "official",
  state_fn: Callable[[Array], Array] | None = None,
  delta: float | None = None,
  cond: Array | None = None,
) -> tuple[Array, Array]:
  """The two terms of the SAIL loss of every latent: sharpness term and ``||x||``.

  ``L(x) = S(x) + α P(x)`` with ``S = ||g(y + δ ĝ(y))||`` (official) or
  ``||g(y + δ g(y)) − g(y)||²`` (finite difference), ``y = state_fn(x)``, and ``P = ||x||``
  (official) or ``||x||²``. Used to set ``α`` and the threshold from the plain-noise ``S``
  (dimension-aware settings of the sharpness experiments).

  Args:
    g: the guidance field ``y (D,) -> (D,)`` (``g(y, cond)`` with ``cond``).
    x: latents ``(N, D)``.
    objective: ``"official"`` or ``"finite_difference"``.
    state_fn: ``x -> y`` (``None``: identity; ``state_fn(x, cond)`` with ``cond``).
    delta: step ``δ`` (default 1 official, 0.1 finite difference).
    cond: optional per-latent condition with leading axis ``N``.

  Returns:
    ``(S (N,), P (N,))``.

  Raises:
    ValueError: if ``x`` is not ``(N, D)`` or holds NaN/inf, ``objective`` is unknown, ``delta``
      is not positive or ``cond`` has the wrong leading axis.
  """
  delta = _default_delta(objective, delta)
  _check_sail_args(x, objective, (), (("delta", delta),), 0.0, None, None, cond)
  c = jnp.zeros(x.shape[:1]) if cond is None else cond
  return _terms_jit(g, state_fn, objective, cond is not None, x, jnp.asarray(delta, x.dtype), c)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _terms_jit(g, state_fn, objective, has_cond, x, delta, cond):
  def one(xi, c):
    gg, sf = _bind(g, state_fn, has_cond, c)
    return _sharpness_term(objective, gg, sf, xi, delta), _prior(objective, xi)

  return jax.vmap(one)(x, cond)


def _bind(g, state_fn, has_cond, c):
  """``g`` and ``state_fn`` with the condition ``c`` bound (when there is one)."""
  if not has_cond:
    return g, state_fn
  sf = None if state_fn is None else (lambda z: state_fn(z, c))
  return (lambda y: g(y, c)), sf


def project_to_shell(x: Array) -> Array:
  """``√D x / ||x||``: the point of the sphere of radius ``√D`` (the Gaussian's typical shell) along
  ``x`` (``x (..., D)``; rows of norm 0 are returned unchanged).

  Args:
    x: latents ``(..., D)``.

  Returns:
    ``(..., D)``, each row of norm exactly ``√D`` (to rounding).
  """
  d = x.shape[-1]
  n = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return jnp.where(n > 0, x * (jnp.sqrt(jnp.asarray(d, x.dtype)) / jnp.where(n > 0, n, 1.0)), x)


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
  threshold_step: float | None = None,
  rounds_per_rise: int = 3,
  steps_per_round: int = 10,
  lr: float = 0.05,
  max_iters: int = 100,
  project: bool = False,
  key: Array | None = None,
  cond: Array | None = None,
) -> SailResult:
  """SAIL: Adam on each initial noise ``x0[n]`` until ``L(x) = ||g(y + ĝ(y))|| + α||x||`` is low.

  ``objective="official"`` (default): ``L(x) = ||g(y + δ ĝ(y))|| + α ||x||``, ``ĝ = g/||g||``,
  ``δ = 1`` (:func:`sail_objective_official`, the authors' released code, whose ``g`` is the
  ε-difference: build it with :func:`sail_field`);
  ``"finite_difference"``: ``||g(y + δ g(y)) − g(y)||² + α ||x||²`` (:func:`sail_objective`,
  default ``δ = 0.1``). ``y = state_fn(x)`` is the state at which ``g`` is evaluated: the
  identity (``None``) scores the latent itself, as the released code does at SD's first step; a
  sampler's map from the noise to its state at ``t_s`` evaluates ``g`` after guided steps. The
  prior term is on ``x``.

  Rounds (the released code's protocol): ``steps_per_round`` Adam steps per round; a latent is
  accepted (frozen) at the first iterate with ``L ≤ thr_r``; at the end of a round every latent not
  yet accepted is RE-SEEDED with fresh ``N(0, I)`` noise (Adam state reset; keys from ``key``,
  default ``PRNGKey(0)``); every ``rounds_per_rise`` rounds the threshold rises:
  ``thr_r = thr_0 + Δ ⌊r / rounds_per_rise⌋`` with ``Δ = threshold_step`` (absolute) when given,
  else ``Δ = threshold_rise |thr_0|``. ``thr_0 = threshold`` if given, else
  ``threshold_rel × median_n L(x0[n])`` (relative to the plain-noise loss, memjax's adaptation).
  The released SD v1 schedule is absolute: ``threshold=8.2, threshold_step=0.1,
  rounds_per_rise=3`` (:data:`SD_V1`; the code raises the threshold, and draws new latents, after
  every third failed round). Latents still not accepted after ``max_iters`` steps are returned
  with ``converged = False`` (callers should discard or report them). ``steps_per_round ≥
  max_iters`` gives a single round without re-seeding. ``project=True`` maps every Adam iterate
  back onto the sphere ``||x|| = √D`` (:func:`project_to_shell`), keeping the latent on the
  Gaussian's typical shell (the prior term is then constant for projected iterates).

  Args:
    g: the guidance field ``y (D,) -> (D,)`` (or ``g(y, cond)`` with ``cond``).
    x0: initial noises ``(N, D)``.
    objective: ``"official"`` or ``"finite_difference"``.
    state_fn: ``x -> y``, the map from the noise to the state where ``g`` is evaluated (``None``:
      identity); ``state_fn(x, cond)`` with ``cond``.
    alpha: prior weight ``α ≥ 0``.
    delta: step ``δ`` (default 1 for the official objective, 0.1 for the finite-difference one).
    threshold: absolute round-0 threshold (default: relative, below).
    threshold_rel: round-0 threshold as a fraction of the median plain-noise loss.
    threshold_rise: relative rise of the threshold every ``rounds_per_rise`` rounds.
    threshold_step: absolute rise (overrides ``threshold_rise``).
    rounds_per_rise: rounds between rises.
    steps_per_round: Adam steps per round.
    lr: Adam learning rate.
    max_iters: total step budget per latent.
    project: project every Adam iterate onto ``||x|| = √D``.
    key: PRNG key of the re-seeding noise (default ``PRNGKey(0)``).
    cond: optional per-latent condition with leading axis ``N`` (e.g. each latent's prompt).

  Returns:
    :class:`SailResult`.

  Raises:
    ValueError: if ``x0`` is not ``(N, D)`` or holds NaN/inf, ``objective`` is unknown, a count is
      below 1, ``lr`` or ``delta`` is not positive, ``alpha < 0``, a threshold is not finite, or
      ``cond`` has the wrong leading axis.

  References:
    Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
    Probability Landscapes", arXiv:2412.04140.
  """
  delta = _default_delta(objective, delta)
  _check_sail_args(
    x0,
    objective,
    (
      ("max_iters", max_iters),
      ("steps_per_round", steps_per_round),
      ("rounds_per_rise", rounds_per_rise),
    ),
    (("lr", lr), ("delta", delta)),
    alpha,
    threshold,
    threshold_step,
    cond,
  )
  dt = x0.dtype
  as_arr = lambda v: jnp.asarray(jnp.nan if v is None else v, dt)  # NaN: "not given"
  key = jax.random.PRNGKey(0) if key is None else key
  return _sail(
    g,
    state_fn,
    objective,
    cond is not None,
    int(max_iters),
    int(min(steps_per_round, max_iters)),
    int(rounds_per_rise),
    bool(project),
    x0,
    as_arr(alpha),
    as_arr(delta),
    as_arr(threshold),
    as_arr(threshold_rel),
    as_arr(threshold_rise),
    as_arr(threshold_step),
    as_arr(lr),
    key,
    jnp.zeros(x0.shape[:1]) if cond is None else cond,
  )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6, 7))
def _sail(
  g,
  state_fn,
  objective,
  has_cond,
  max_iters,
  spr,
  rpr,
  project,
  x0,
  alpha,
  delta,
  thr,
  thr_rel,
  rise,
  step_abs,
  lr,
  key,
  cond,
):
  opt = optax.adam(lr)

  loss_fn = functools.partial(_latent_loss, g, state_fn, objective, has_cond, alpha, delta)

  loss_grad = jax.value_and_grad(loss_fn)
  l0 = jax.vmap(loss_fn)(x0, cond)
  thr0, thr_of = _threshold_fn(l0, thr, thr_rel, rise, step_abs, rpr)

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
      x_new = optax.apply_updates(x, upd)
      x_new = project_to_shell(x_new) if project else x_new
      x = jnp.where(done, x, x_new)
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


class RejectionResult(NamedTuple):
  """The outcome of :func:`rejection_control` per latent.

  Attributes:
    x: ``(N, D)`` the accepted draw (or the last draw when none passed).
    score: ``(N,)`` its SAIL loss ``L``.
    draws: ``(N,)`` losses evaluated (1 = ``x0`` itself accepted; the budget when none passed).
    converged: ``(N,)`` bool: a draw had ``L ≤`` the threshold in force.
    threshold: ``(N,)`` threshold in force at acceptance (or at the end).
    initial_threshold: ``()`` threshold of round 0 (as in :func:`sail`).
  """

  x: Array  # (N, D) accepted draw (or the last draw)
  score: Array  # (N,) its loss L
  draws: Array  # (N,) losses evaluated, acceptance included
  converged: Array  # (N,) bool
  threshold: Array  # (N,) threshold in force at acceptance (or at the end)
  initial_threshold: Array  # ()


def rejection_control(
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
  threshold_step: float | None = None,
  rounds_per_rise: int = 3,
  steps_per_round: int = 10,
  max_iters: int = 100,
  step_cost: int = 3,
  key: Array | None = None,
  cond: Array | None = None,
) -> RejectionResult:
  """SAIL's control without gradients: re-draw plain noise until its SAIL loss passes the threshold.

  The same score ``L`` (:func:`sail`'s loss with the same ``objective``, ``g``, ``state_fn``,
  ``α``, ``δ``), the same round-0 threshold (absolute, or ``threshold_rel`` × the median ``L`` of
  the same ``x0``) and the same rise schedule, at EQUAL COMPUTE: an Adam step of :func:`sail`
  costs one value-and-gradient of ``L``, counted as ``step_cost`` evaluations of ``L`` (reverse
  mode ≈ 2 forward passes on top of the forward one: ``step_cost = 3``), so the budget per latent
  is ``max_iters × step_cost`` draws and one round of :func:`sail` (``steps_per_round`` steps)
  corresponds to ``steps_per_round × step_cost`` draws, over which the threshold is the one of
  that round. Draw 0 is ``x0[n]`` itself; draw ``j > 0`` is fresh ``N(0, I)`` noise (keys from
  ``key``, default ``PRNGKey(0)``); the first draw with ``L ≤ thr`` is accepted.

  Args:
    g: the guidance field ``y (D,) -> (D,)`` (or ``g(y, cond)`` with ``cond``).
    x0: initial noises ``(N, D)``.
    objective: ``"official"`` or ``"finite_difference"``.
    state_fn: as in :func:`sail`.
    alpha: prior weight ``α ≥ 0``.
    delta: step ``δ`` (default 1 official, 0.1 finite difference).
    threshold: absolute round-0 threshold (default: relative).
    threshold_rel: round-0 threshold as a fraction of the median plain-noise loss.
    threshold_rise: relative rise every ``rounds_per_rise`` rounds.
    threshold_step: absolute rise (overrides ``threshold_rise``).
    rounds_per_rise: rounds between rises.
    steps_per_round: :func:`sail`'s steps per round (a round here is ``steps_per_round ×
      step_cost`` draws).
    max_iters: :func:`sail`'s step budget (the draw budget is ``max_iters × step_cost``).
    step_cost: evaluations of ``L`` one Adam step costs.
    key: PRNG key of the draws.
    cond: optional per-latent condition with leading axis ``N``.

  Returns:
    :class:`RejectionResult`.

  Raises:
    ValueError: as :func:`sail`, and if ``step_cost`` is not an int ``≥ 1``.

  References:
    Jeon et al., "Understanding and Mitigating Memorization in Generative Models via Sharpness of
    Probability Landscapes", arXiv:2412.04140 (the mitigation it controls for).
  """
  delta = _default_delta(objective, delta)
  _check_sail_args(
    x0,
    objective,
    (
      ("max_iters", max_iters),
      ("steps_per_round", steps_per_round),
      ("rounds_per_rise", rounds_per_rise),
      ("step_cost", step_cost),
    ),
    (("delta", delta),),
    alpha,
    threshold,
    threshold_step,
    cond,
  )
  dt = x0.dtype
  as_arr = lambda v: jnp.asarray(jnp.nan if v is None else v, dt)
  key = jax.random.PRNGKey(0) if key is None else key
  return _rejection(
    g,
    state_fn,
    objective,
    cond is not None,
    int(max_iters * step_cost),
    int(min(steps_per_round, max_iters) * step_cost),
    int(rounds_per_rise),
    x0,
    as_arr(alpha),
    as_arr(delta),
    as_arr(threshold),
    as_arr(threshold_rel),
    as_arr(threshold_rise),
    as_arr(threshold_step),
    key,
    jnp.zeros(x0.shape[:1]) if cond is None else cond,
  )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5, 6))
def _rejection(
  g,
  state_fn,
  objective,
  has_cond,
  budget,
  dpr,
  rpr,
  x0,
  alpha,
  delta,
  thr,
  thr_rel,
  rise,
  step_abs,
  key,
  cond,
):
  loss_fn = functools.partial(_latent_loss, g, state_fn, objective, has_cond, alpha, delta)

  l0 = jax.vmap(loss_fn)(x0, cond)
  thr0, thr_of = _threshold_fn(l0, thr, thr_rel, rise, step_abs, rpr)

  def one(x_start, l_start, k, c):
    def draw(carry, j):
      x, sc, done, n, thr_acc = carry
      cand = jax.random.normal(jax.random.fold_in(k, j), x.shape, x.dtype)
      lc = loss_fn(cand, c)
      t_j = thr_of(j // dpr)
      acc = ~done & (lc <= t_j)
      live = ~done
      x = jnp.where(live, cand, x)
      sc = jnp.where(live, lc, sc)
      n = n + live.astype(jnp.int32)
      thr_acc = jnp.where(live, t_j, thr_acc)
      return (x, sc, done | acc, n, thr_acc), None

    done0 = l_start <= thr_of(0)
    init = (x_start, l_start, done0, jnp.asarray(1, jnp.int32), thr_of(0))
    (x, sc, done, n, thr_acc), _ = jax.lax.scan(draw, init, jnp.arange(1, budget))
    return x, sc, n, done, thr_acc

  keys = jax.random.split(key, x0.shape[0])
  return RejectionResult(*jax.vmap(one)(x0, l0, keys, cond), thr0)


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
