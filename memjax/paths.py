"""Probability paths ``x_t = ψ(t)·x_data + σ(t)·ε`` and parameterisation converters.

Every schedule is described once by ``(ψ, σ)`` and their time derivatives; all
conversions between the four common network outputs are derived from them:

* epsilon ``ε̂(y,t) = E[ε | x_t = y]``
* score ``s(y,t) = ∇_y log p_t(y) = −ε̂ / σ``
* data prediction ``x̂(y,t) = E[x_data | x_t = y] = (y − σ ε̂) / ψ``
* velocity of the marginal flow ``u(y,t) = ψ' x̂ + σ' ε̂``

Time conventions differ between schedules and are recorded on the schedule:
flow matching (``linear_fm``) has noise at ``t = 0`` and data at ``t = 1``
(ψ = t, σ = 1 − t); VP and VE have data at ``t = 0`` and noise at ``t = 1``.

The vocabulary of user callables is defined here, once:

* :data:`Field` — a network field ``f(params, x (B, D), t (B,)) -> (B, D)``;
* :data:`BatchField` — the same with the parameters closed over, ``f(x (B, D), t (B,))``;
* :data:`PointField` — one point at a time, ``f(x (D,), t ()) -> (D,)``;
* :data:`Denoiser` — a VE-view denoiser ``D(y (Q, d), σ ()) -> x̂ (Q, d)``.

:func:`point_fn` turns a batched field of one parameterisation into a point field of
another (e.g. a velocity network into a per-point ε̂ or score).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
#: A network field ``f(params, x (B, D), t (B,)) -> (B, D)``.
Field = Callable[[Any, Array, Array], Array]
#: A field with its parameters closed over, ``f(x (B, D), t (B,)) -> (B, D)``.
BatchField = Callable[[Array, Array], Array]
#: One point at a time, ``f(x (D,), t ()) -> (D,)``.
PointField = Callable[[Array, Array], Array]
#: A VE-view denoiser ``D(y (Q, d), σ ()) -> x̂ (Q, d)``.
Denoiser = Callable[[Array, Array], Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
  """A probability path ``x_t = ψ(t) x + σ(t) ε`` given by two scalar functions of ``t``.

  Compared and hashed by identity (the factories return one cached object per setting), which
  keeps it a cheap static argument of the compiled programs that take it.

  Attributes:
    name: the factory's name (``"linear_fm"``, ``"vp_linear"``, ``"ve"``, ``"edm"``).
    psi: signal scale ``ψ(t)``.
    sigma: noise scale ``σ(t)``.
    t_noise: the time of the noise end.
    t_data: the time of the data end.
  """

  name: str
  psi: Callable[[jax.Array], jax.Array]
  sigma: Callable[[jax.Array], jax.Array]
  t_noise: float
  t_data: float

  def dpsi(self, t):
    """``ψ'(t)`` by automatic differentiation, elementwise over ``t``.

    Args:
      t: time(s), any shape.

    Returns:
      ``dψ/dt`` of the shape of ``t``.
    """
    return _scalar_derivative(self.psi, t)

  def dsigma(self, t):
    """``σ'(t)`` by automatic differentiation, elementwise over ``t``.

    Args:
      t: time(s), any shape.

    Returns:
      ``dσ/dt`` of the shape of ``t``.
    """
    return _scalar_derivative(self.sigma, t)

  def sample(self, x_data: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """``x_t = ψ(t) x_data + σ(t) ε`` with ``t`` broadcast over the leading axes.

    Args:
      x_data: clean points ``(..., D)``.
      eps: noise of the same shape.
      t: times ``(...)``.

    Returns:
      ``x_t``, ``(..., D)``.
    """
    t = jnp.asarray(t)[..., None]
    return self.psi(t) * x_data + self.sigma(t) * eps


def _scalar_derivative(f, t):
  t = jnp.asarray(t)
  if not jnp.issubdtype(t.dtype, jnp.floating):
    t = t.astype(jnp.float32)
  g = jax.grad(lambda s: f(s))
  for _ in range(t.ndim):
    g = jax.vmap(g)
  return g(t)


@functools.cache  # one Schedule object per setting, so compiled programs are reused
def linear_fm() -> Schedule:
  """Linear (rectified / conditional-OT) flow matching: ``ψ = t``, ``σ = 1 − t``.

  Noise at ``t = 0``, data at ``t = 1``. Cached: every call returns the same object.

  Returns:
    :class:`Schedule`.

  References:
    Lipman et al., "Flow Matching for Generative Modeling", arXiv:2210.02747.
  """
  return Schedule("linear_fm", psi=lambda t: t, sigma=lambda t: 1.0 - t, t_noise=0.0, t_data=1.0)


@functools.cache  # one Schedule object per setting, so compiled programs are reused
def vp_linear(beta_min: float = 0.1, beta_max: float = 20.0) -> Schedule:
  """Variance-preserving SDE with linear ``β(t) = β_min + t(β_max − β_min)``, data at ``t = 0``.

  ``ψ(t) = exp(−½∫₀ᵗβ) = exp(−½(β_min t + ½(β_max − β_min)t²))``, ``σ(t) = √(1 − ψ(t)²)``.
  Cached per setting.

  Args:
    beta_min: ``β(0)``.
    beta_max: ``β(1)``.

  Returns:
    :class:`Schedule`.

  References:
    Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations",
    arXiv:2011.13456.
  """

  def log_psi(t):
    return -0.5 * (beta_min * t + 0.5 * (beta_max - beta_min) * t**2)

  return Schedule(
    "vp_linear",
    psi=lambda t: jnp.exp(log_psi(t)),
    sigma=lambda t: jnp.sqrt(-jnp.expm1(2.0 * log_psi(t))),
    t_noise=1.0,
    t_data=0.0,
  )


@functools.cache  # one Schedule object per setting, so compiled programs are reused
def ve(sigma_min: float = 0.01, sigma_max: float = 50.0) -> Schedule:
  """Variance-exploding: ``ψ = 1``, ``σ(t) = σ_min (σ_max/σ_min)^t``, data at ``t = 0``.

  Cached per setting.

  Args:
    sigma_min: ``σ(0)``.
    sigma_max: ``σ(1)``.

  Returns:
    :class:`Schedule`.

  References:
    Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations",
    arXiv:2011.13456.
  """
  ratio = sigma_max / sigma_min
  return Schedule(
    "ve",
    psi=lambda t: jnp.ones_like(t),
    sigma=lambda t: sigma_min * ratio**t,
    t_noise=1.0,
    t_data=0.0,
  )


#: Schedule factories by name (``"edm"`` is added below its definition).
SCHEDULES = {"linear_fm": linear_fm, "vp_linear": vp_linear, "ve": ve}


def get_schedule(name: str, **kwargs) -> Schedule:
  """The schedule called ``name`` in :data:`SCHEDULES`, built with ``kwargs``.

  Args:
    name: ``"linear_fm"``, ``"vp_linear"``, ``"ve"`` or ``"edm"``.
    **kwargs: the factory's settings (e.g. ``beta_max`` for ``vp_linear``).

  Returns:
    :class:`Schedule`.

  Raises:
    ValueError: if ``name`` is unknown.
  """
  if name not in SCHEDULES:
    raise ValueError(f"`name` must be one of {sorted(SCHEDULES)}; got {name!r}.")
  return SCHEDULES[name](**kwargs)


# ---------------------------------------------------------------------------
# Linear FM training pair.


def fm_interpolate(x1: jax.Array, x0: jax.Array, t: jax.Array):
  """Linear FM path ``x_t = (1 − t) x0 + t x1`` and its target velocity ``x1 − x0``.

  Args:
    x1: data, ``(B, D)``.
    x0: noise, ``(B, D)``.
    t: times, ``(B,)``.

  Returns:
    ``(x_t (B, D), x1 − x0 (B, D))``.
  """
  tt = jnp.asarray(t)[..., None]
  return (1.0 - tt) * x0 + tt * x1, x1 - x0


# ---------------------------------------------------------------------------
# Converters. All take (schedule, y, t, value) with y: (..., D), t: scalar or (...).


def _coeffs(schedule: Schedule, t, like):
  t = jnp.broadcast_to(jnp.asarray(t, dtype=jnp.result_type(like)), jnp.shape(like)[:-1])
  psi, sig = schedule.psi(t), schedule.sigma(t)
  dpsi, dsig = schedule.dpsi(t), schedule.dsigma(t)
  expand = lambda a: jnp.asarray(a)[..., None]
  return expand(psi), expand(sig), expand(dpsi), expand(dsig)


def eps_to_score(schedule, y, t, eps):
  """Score from the noise prediction: ``s = −ε̂ / σ``.

  All converters take ``(schedule, y, t, value)`` with ``y`` and ``value`` of shape ``(..., D)``
  and ``t`` a scalar or ``(...)``.

  Args:
    schedule: the :class:`Schedule` the network was trained on.
    y: noisy points ``x_t``.
    t: time(s).
    eps: ``ε̂(y, t)``.

  Returns:
    ``s(y, t)``, the shape of ``y``.
  """
  _, sig, _, _ = _coeffs(schedule, t, y)
  return -eps / sig


def score_to_eps(schedule, y, t, score):
  """Noise prediction from the score: ``ε̂ = −σ s``.

  Args:
    schedule: the :class:`Schedule`.
    y: noisy points ``(..., D)``.
    t: time(s).
    score: ``s(y, t)``.

  Returns:
    ``ε̂(y, t)``.
  """
  _, sig, _, _ = _coeffs(schedule, t, y)
  return -sig * score


def eps_to_x0(schedule, y, t, eps):
  """Data prediction from the noise prediction: ``x̂ = (y − σ ε̂) / ψ``.

  Args:
    schedule: the :class:`Schedule`.
    y: noisy points ``(..., D)``.
    t: time(s).
    eps: ``ε̂(y, t)``.

  Returns:
    ``x̂(y, t)``.
  """
  psi, sig, _, _ = _coeffs(schedule, t, y)
  return (y - sig * eps) / psi


def x0_to_eps(schedule, y, t, x0):
  """Noise prediction from the data prediction: ``ε̂ = (y − ψ x̂) / σ``.

  Args:
    schedule: the :class:`Schedule`.
    y: noisy points ``(..., D)``.
    t: time(s).
    x0: ``x̂(y, t)``.

  Returns:
    ``ε̂(y, t)``.
  """
  psi, sig, _, _ = _coeffs(schedule, t, y)
  return (y - psi * x0) / sig


def eps_to_velocity(schedule, y, t, eps):
  """Marginal velocity from the noise prediction: ``u = ψ' x̂ + σ' ε̂ = (ψ'/ψ) y + (σ' − ψ'σ/ψ) ε̂``.

  Args:
    schedule: the :class:`Schedule`.
    y: noisy points ``(..., D)``.
    t: time(s).
    eps: ``ε̂(y, t)``.

  Returns:
    ``u(y, t)``.
  """
  psi, sig, dpsi, dsig = _coeffs(schedule, t, y)
  return (dpsi / psi) * y + (dsig - dpsi * sig / psi) * eps


def velocity_to_eps(schedule, y, t, u):
  """Noise prediction from the velocity: ``ε̂ = (u − (ψ'/ψ) y) / (σ' − ψ'σ/ψ)``.

  The inverse of :func:`eps_to_velocity`; for linear FM it is ``ε̂ = y − t·u``.

  Args:
    schedule: the :class:`Schedule`.
    y: noisy points ``(..., D)``.
    t: time(s).
    u: ``u(y, t)``.

  Returns:
    ``ε̂(y, t)``.
  """
  psi, sig, dpsi, dsig = _coeffs(schedule, t, y)
  return (u - (dpsi / psi) * y) / (dsig - dpsi * sig / psi)


def velocity_to_score(schedule, y, t, u):
  """Score from the velocity, through ``ε̂``: ``s = −ε̂(u) / σ``.

  Args:
    schedule: the :class:`Schedule`.
    y: noisy points ``(..., D)``.
    t: time(s).
    u: ``u(y, t)``.

  Returns:
    ``s(y, t)``.
  """
  return eps_to_score(schedule, y, t, velocity_to_eps(schedule, y, t, u))


def score_to_velocity(schedule, y, t, score):
  """Velocity from the score, through ``ε̂ = −σ s``.

  Args:
    schedule: the :class:`Schedule`.
    y: noisy points ``(..., D)``.
    t: time(s).
    score: ``s(y, t)``.

  Returns:
    ``u(y, t)``.
  """
  return eps_to_velocity(schedule, y, t, score_to_eps(schedule, y, t, score))


def x0_to_score(schedule, y, t, x0):
  """Score from the data prediction: ``s = −(y − ψ x̂) / σ²``.

  Args:
    schedule: the :class:`Schedule`.
    y: noisy points ``(..., D)``.
    t: time(s).
    x0: ``x̂(y, t)``.

  Returns:
    ``s(y, t)``.
  """
  return eps_to_score(schedule, y, t, x0_to_eps(schedule, y, t, x0))


def score_to_x0(schedule, y, t, score):
  """Data prediction from the score (Tweedie): ``x̂ = (y + σ² s) / ψ``.

  Args:
    schedule: the :class:`Schedule`.
    y: noisy points ``(..., D)``.
    t: time(s).
    score: ``s(y, t)``.

  Returns:
    ``x̂(y, t)``.
  """
  return eps_to_x0(schedule, y, t, score_to_eps(schedule, y, t, score))


_TO_EPS = {
  "eps": lambda s, y, t, v: v,
  "score": score_to_eps,
  "x0": x0_to_eps,
  "velocity": velocity_to_eps,
}
_FROM_EPS = {
  "eps": lambda s, y, t, v: v,
  "score": eps_to_score,
  "x0": eps_to_x0,
  "velocity": eps_to_velocity,
}


def convert(schedule: Schedule, y, t, value, src: str, dst: str):
  """Convert a network output between parameterisations (``eps``, ``score``, ``x0``, ``velocity``).

  Every conversion goes through ``ε̂`` (``value → ε̂ → dst``), so each pair is derived once from
  ``(ψ, σ, ψ', σ')``.

  Args:
    schedule: the :class:`Schedule` the network was trained on.
    y: noisy points ``(..., D)``.
    t: time(s), scalar or ``(...)``.
    value: the network output in parameterisation ``src``, shape of ``y``.
    src: parameterisation of ``value``.
    dst: wanted parameterisation.

  Returns:
    ``value`` in parameterisation ``dst``.

  Raises:
    ValueError: if ``src`` or ``dst`` is not one of :data:`PARAMETERISATIONS`.
  """
  _check_parameterisation("src", src)
  _check_parameterisation("dst", dst)
  return _FROM_EPS[dst](schedule, y, t, _TO_EPS[src](schedule, y, t, value))


def _check_parameterisation(name: str, value: str) -> None:
  if value not in _TO_EPS:
    raise ValueError(f"`{name}` must be one of {sorted(_TO_EPS)}; got {value!r}.")


def point_fn(
  field: BatchField, schedule: Schedule, src: str = "velocity", dst: str = "score"
) -> PointField:
  """Per-point ``f(x (D,), t ()) -> (D,)`` in parameterisation ``dst`` from a batched ``field``.

  ``field(x (B, D), t (B,))`` outputs parameterisation ``src``; the result is
  ``convert(schedule, x, t, field(x[None], t[None])[0], src, dst)``. Typical uses:
  ``point_fn(f, sched, "eps", "eps")`` (FLIPD) and ``point_fn(f, sched, "velocity", "score")``
  (sharpness).

  Args:
    field: a :data:`BatchField`.
    schedule: the :class:`Schedule` it was trained on.
    src: the field's parameterisation.
    dst: the parameterisation of the returned point field.

  Returns:
    A :data:`PointField`.

  Raises:
    ValueError: if ``src`` or ``dst`` is not a known parameterisation.
  """
  _check_parameterisation("src", src)
  _check_parameterisation("dst", dst)

  def f(x, t):
    t = jnp.asarray(t, x.dtype)
    out = field(x[None, :], jnp.reshape(t, (1,)))[0]
    return convert(schedule, x, t, out, src, dst)

  return f


def point_cond_fn(field, schedule: Schedule, src: str = "velocity", dst: str = "score"):
  """Conditional :func:`point_fn`: ``f(x (D,), t (), c ()) -> (D,)`` from ``field(x, t, y)``.

  Args:
    field: ``field(x (B, D), t (B,), labels (B,)) -> (B, D)`` in parameterisation ``src``.
    schedule: the :class:`Schedule` it was trained on.
    src: the field's parameterisation.
    dst: the parameterisation of the returned point field.

  Returns:
    ``f(x (D,), t (), c ()) -> (D,)``.

  Raises:
    ValueError: if ``src`` or ``dst`` is not a known parameterisation.
  """
  _check_parameterisation("src", src)
  _check_parameterisation("dst", dst)

  def f(x, t, c):
    t = jnp.asarray(t, x.dtype)
    out = field(x[None, :], jnp.reshape(t, (1,)), jnp.asarray(c)[None])[0]
    return convert(schedule, x, t, out, src, dst)

  return f


def fm_sigma_to_t(sigma):
  """VE noise level → linear-FM time: ``t = 1/(1 + σ)``.

  FM has ``x_t = t x + (1 − t) ε`` (data at ``t = 1``), so ``x_t / t = x + ((1 − t)/t) ε`` is a VE
  point with ``σ = (1 − t)/t``; inverting gives ``t = 1/(1 + σ)`` and ``y_FM = t · y_VE``. Since
  ``y_VE ↦ y_FM`` is a bijection, ``E[x | y_VE] = E[x | x_t]``.

  Args:
    sigma: VE noise level(s) ``σ ≥ 0``.

  Returns:
    FM time(s) ``t ∈ (0, 1]``.
  """
  return 1.0 / (1.0 + sigma)


def fm_t_to_sigma(t):
  """Linear-FM time → VE noise level ``σ = (1 − t)/t`` (inverse of :func:`fm_sigma_to_t`).

  Args:
    t: FM time(s) in ``(0, 1]``.

  Returns:
    ``σ``.
  """
  return (1.0 - t) / t


def noise_to_signal(schedule: Schedule, t) -> jax.Array:
  """The noise-to-signal ratio ``σ(t)/ψ(t)`` (the VE-equivalent noise level of time ``t``).

  Args:
    schedule: a :class:`Schedule`.
    t: time(s).

  Returns:
    ``σ(t)/ψ(t)``, the shape of ``t``.
  """
  t = jnp.asarray(t, jnp.result_type(float))
  return schedule.sigma(t) / schedule.psi(t)


def time_at_noise_to_signal(schedule: Schedule, ratio, num_iters: int = 100) -> jax.Array:
  """The time ``t`` of ``schedule`` with ``σ(t)/ψ(t) = ratio``, by bisection.

  ``σ/ψ`` grows monotonically from the data end ``t_data`` to the noise end ``t_noise`` for every
  schedule here, so bisection on ``[t_data, t_noise]`` converges to machine precision in
  ``num_iters`` halvings. Ratios beyond the schedule's range give the nearest end.

  Args:
    schedule: a :class:`Schedule`.
    ratio: target ``σ/ψ > 0``, scalar or array.
    num_iters: bisection steps.

  Returns:
    ``t`` of the shape of ``ratio``.
  """
  ratio = jnp.asarray(ratio, jnp.result_type(float))
  lo = jnp.zeros_like(ratio)  # fraction of the way from t_data to t_noise
  hi = jnp.ones_like(ratio)
  to_t = lambda f: schedule.t_data + f * (schedule.t_noise - schedule.t_data)

  def halve(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = noise_to_signal(schedule, to_t(mid)) < ratio
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, num_iters, halve, (lo, hi))
  return to_t(0.5 * (lo + hi))


def match_noise_level(t, src: Schedule, dst: Schedule) -> jax.Array:
  """The time of ``dst`` with the noise level ``σ/ψ`` of time ``t`` of ``src``.

  The way to carry a setting such as FLIPD's ``t0`` across schedules: VP ``t0 = 0.05``
  (:func:`vp_linear` with its default β ∈ [0.1, 20]) has ``σ/ψ = 0.17414``, which is linear-FM
  ``t = 0.85169`` (``t = 1/(1 + σ/ψ)``), not ``1 − 0.05``.

  Args:
    t: time(s) of ``src``.
    src: the :class:`Schedule` ``t`` belongs to.
    dst: the :class:`Schedule` to express it in.

  Returns:
    Time(s) of ``dst``.
  """
  return time_at_noise_to_signal(dst, noise_to_signal(src, t))


def as_score_fn(field, schedule: Schedule, parameterisation: str = "velocity"):
  """Wrap ``field(params, y, t)`` of a given parameterisation as a score ``s(params, y, t)``.

  Args:
    field: a :data:`Field`.
    schedule: the :class:`Schedule` it was trained on.
    parameterisation: the field's output (``"velocity"``, ``"eps"``, ``"x0"`` or ``"score"``).

  Returns:
    ``score(params, y, t)`` with :func:`convert` applied to the field's output.
  """

  def score(params, y, t):
    return convert(schedule, y, t, field(params, y, t), parameterisation, "score")

  return score


# ---------------------------------------------------------------------------
# EDM (Karras et al. 2022): time is the noise level.


@functools.cache  # one Schedule object per setting, so compiled programs are reused
def edm(sigma_max: float = 80.0) -> Schedule:
  """EDM schedule: ``ψ(t) = 1``, ``σ(t) = t``; data at ``t = 0``, noise at ``t = σ_max``.

  Times live in ``[σ_min, σ_max]`` (not ``[0, 1]``; typically ``σ_min = 0.002``); see
  :func:`karras_sigmas` for the sampling grid and :func:`edm_log_normal_times` for the training
  distribution. Cached per setting.

  Args:
    sigma_max: the noise end.

  Returns:
    :class:`Schedule`.

  References:
    Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models",
    arXiv:2206.00364.
  """
  return Schedule(
    "edm", psi=lambda t: jnp.ones_like(t), sigma=lambda t: t, t_noise=float(sigma_max), t_data=0.0
  )


def karras_sigmas(
  num: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> jax.Array:
  """Karras noise levels ``σ_i = (σ_max^{1/ρ} + i/(n−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ``, ``i < n``.

  Args:
    num: number of levels ``n ≥ 2``.
    sigma_min: the smallest level.
    sigma_max: the largest level.
    rho: the warping exponent ``ρ``.

  Returns:
    ``(n,)`` levels, descending from ``σ_max`` to ``σ_min``.

  Raises:
    ValueError: if ``num < 2`` or not ``0 < sigma_min < sigma_max``.

  References:
    Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models",
    arXiv:2206.00364.
  """
  if num < 2:
    raise ValueError(f"`num` must be >= 2; got {num}.")
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"need 0 < `sigma_min` < `sigma_max`; got {sigma_min}, {sigma_max}.")
  ramp = jnp.linspace(0.0, 1.0, num)
  lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
  return (hi + ramp * (lo - hi)) ** rho


def edm_log_normal_times(
  key: jax.Array, shape, p_mean: float = -1.2, p_std: float = 1.2, dtype=jnp.float32
):
  """EDM training noise levels ``ln σ ~ N(P_mean, P_std²)``.

  Args:
    key: PRNG key.
    shape: output shape.
    p_mean: ``P_mean``.
    p_std: ``P_std``.
    dtype: output dtype.

  Returns:
    ``t = σ`` of ``shape``.

  References:
    Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models",
    arXiv:2206.00364.
  """
  return jnp.exp(p_mean + p_std * jax.random.normal(key, shape, dtype))


SCHEDULES["edm"] = edm
#: The network parameterisations :func:`convert` understands.
PARAMETERISATIONS = tuple(sorted(_TO_EPS))
