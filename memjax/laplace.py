"""Laplace approximations over weights: tangent Gaussian, Euclidean and Riemannian samples.

Given top-k eigenpairs ``(λ_i, u_i)`` of the Hessian of a loss ``L`` at its
minimiser ``θ*`` (:func:`fit`; products and Lanczos from :mod:`memjax.linalg`), the tangent Gaussian
is

  ``Σ = Uᵀ diag(1/(λ+α)) U + α⁻¹ (I − UᵀU)``   (U: orthonormal rows u_i, shape (k, P)),

velocities are ``v = η Σ^{1/2} z`` and samples are either Euclidean,
``θ_E = θ* + v``, or Riemannian, ``θ_R = γ(1)`` for the geodesic ``γ`` of the
metric ``G(θ) = I + ∇L ∇Lᵀ`` (the metric of the loss graph ``(θ, L(θ))``)
with ``γ(0) = θ*``, ``γ̇(0) = v``:

  ``γ̈ = − g (γ̇ᵀ H γ̇) / (1 + gᵀg)``,  ``g = ∇L(γ)``,  ``H = ∇²L(γ)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, curvature, distributed, linalg, sampling

Array = jax.Array


# ---------------------------------------------------------------------------
# Tangent Gaussian.


class TangentGaussian(NamedTuple):
  """Low-rank-plus-isotropic Gaussian ``N(0, Σ)`` in the tangent space at ``θ*``.

  Attributes:
    values: eigenvalues ``λ`` used in ``Σ`` (already clipped if requested), ``(k,)``.
    vectors: orthonormal rows ``U``, ``(k, P)``.
    alpha: prior precision ``α > 0`` (scalar).
  """

  values: Array
  vectors: Array
  alpha: Array


def _check_eig(eig):
  values, vectors = eig.values, eig.vectors
  _checks.check_ndim("eig.values", values, 1, "(k,)")
  _checks.check_ndim("eig.vectors", vectors, 2, "(k, P)")
  if np.shape(vectors)[0] != np.shape(values)[0]:
    raise ValueError(
      f"`eig.vectors` must have shape (k, P) with k = {np.shape(values)[0]} "
      f"(len of eig.values); got {np.shape(vectors)}."
    )
  _checks.check_finite("eig.values", values)
  _checks.check_finite("eig.vectors", vectors)


def tangent_gaussian(eig, alpha, clip: bool = True) -> TangentGaussian:
  """Build the tangent Gaussian ``N(0, Σ)`` from eigenpairs, with ``λ ← max(λ, 0)`` if ``clip``.

  ``Σ = Uᵀ diag(1/(λ+α)) U + α⁻¹ (I − UᵀU)``. Ritz values of a Hessian can be negative (a
  non-convex loss, or Lanczos noise on nearly flat directions); a negative ``λ`` with
  ``|λ| ≥ α`` would make ``λ + α ≤ 0`` and ``Σ`` not a covariance. Clipping gives such directions
  no data curvature, so their variance is the prior's ``1/α``, and keeps ``Σ`` positive definite.

  Args:
    eig: anything with ``values (k,)`` and ``vectors (k, P)`` (e.g.
      :class:`memjax.linalg.Eigenpairs`).
    alpha: prior precision ``α > 0``.
    clip: clip negative Ritz values to 0 so that ``λ + α ≥ α > 0``.

  Returns:
    :class:`TangentGaussian` holding the (clipped) values, the vectors and ``α`` in the vectors'
    dtype.

  Raises:
    ValueError: if ``eig.values`` is not ``(k,)``, ``eig.vectors`` is not ``(k, P)`` with the same
      ``k``, either contains NaN/inf, or ``alpha`` is not ``> 0``.
  """
  _check_eig(eig)
  _checks.check_positive("alpha", alpha)
  values = jnp.maximum(eig.values, 0.0) if clip else eig.values
  return TangentGaussian(values, eig.vectors, jnp.asarray(alpha, eig.vectors.dtype))


def _lift(x: Array, like: Array) -> Array:
  """Reshape a ``(k,)`` vector to broadcast explicitly against ``like`` ``(..., k)``."""
  return jnp.reshape(x, (1,) * (jnp.ndim(like) - 1) + jnp.shape(x))


def tangent_covariance(tg: TangentGaussian) -> Callable[[Array], Array]:
  """Matrix-free covariance product ``Σ w = Uᵀ diag(1/(λ+α)) U w + α⁻¹ (w − UᵀU w)``.

  Args:
    tg: the tangent Gaussian (:func:`tangent_gaussian`).

  Returns:
    ``cov(w)``: ``(..., P) -> (..., P)``, applying ``Σ`` to the last axis of ``w``.
  """

  def cov(w: Array) -> Array:
    c = w @ tg.vectors.T  # (..., k)
    low = (c / _lift(tg.values + tg.alpha, c)) @ tg.vectors
    return low + (w - c @ tg.vectors) / tg.alpha

  return cov


def tangent_covariance_dense(tg: TangentGaussian) -> Array:
  """Dense covariance ``Σ = Uᵀ diag(1/(λ+α)) U + α⁻¹ (I − UᵀU)`` — for tests and tiny P only.

  Args:
    tg: the tangent Gaussian (:func:`tangent_gaussian`).

  Returns:
    ``Σ``, shape ``(P, P)``, in the dtype of ``tg.vectors``.
  """
  p = tg.vectors.shape[1]
  return tangent_covariance(tg)(jnp.eye(p, dtype=tg.vectors.dtype))


def tangent_sqrt(tg: TangentGaussian, z: Array, subspace_only: bool = False) -> Array:
  """Symmetric square root ``Σ^{1/2} z = Uᵀ diag((λ+α)^{-1/2}) U z + α^{-1/2} (z − UᵀU z)``.

  With ``subspace_only`` the second (complement) term is dropped, giving a sample
  with covariance ``Uᵀ diag(1/(λ+α)) U`` when ``z ~ N(0, I)``.

  Args:
    tg: the tangent Gaussian (:func:`tangent_gaussian`).
    z: vectors to transform, shape ``(..., P)`` (standard normal for a sample).
    subspace_only: keep only the top-k term (drop the isotropic complement).

  Returns:
    ``Σ^{1/2} z`` (or its top-k part), shaped like ``z``.
  """
  c = z @ tg.vectors.T
  low = (c * _lift(jax.lax.rsqrt(tg.values + tg.alpha), c)) @ tg.vectors
  if subspace_only:
    return low
  return low + (z - c @ tg.vectors) * jax.lax.rsqrt(tg.alpha)


_MODES = ("full", "subspace", "single")


def sample_velocities(
  eig,
  alpha,
  eta,
  key: Array,
  num: int,
  mode: str = "subspace",
  index: int | None = None,
  clip: bool = True,
  check: bool = True,
  check_rtol: float = 1e-2,
) -> Array:
  """Initial velocities ``v = η Σ^{1/2} z`` of the Laplace samples.

  Modes (``z ~ N(0, I_P)``, ``ζ ~ N(0, 1)``):

  * ``"full"``: ``v = η [Uᵀ diag((λ+α)^{-1/2}) U z + α^{-1/2}(z − UᵀU z)]``, ``Cov = η² Σ``.
  * ``"subspace"``: ``v = η Uᵀ diag((λ+α)^{-1/2}) U z`` (top-k part only;
    the same key gives the same ``z`` as ``"full"``).
  * ``"single"``: ``v = η (λ_i+α)^{-1/2} ζ u_i`` with ``i = index``.

  Args:
    eig: ``values (k,)``, ``vectors (k, P)`` (orthonormal rows).
    alpha: prior precision ``α > 0``.
    eta: step scale ``η ≥ 0``.
    key: PRNG key.
    num: number of samples ``S``.
    mode: one of ``"full"``, ``"subspace"``, ``"single"``.
    index: eigenvector index for ``"single"``.
    clip: use ``max(λ, 0)`` (see :func:`tangent_gaussian`).
    check: refuse eigenpairs whose residual ``||H u − λu||`` exceeds ``check_rtol · max|λ|``
      or whose vectors are not orthonormal (:func:`memjax.linalg.check_eigenpairs`); the
      covariance of such pairs is not the posterior's.
    check_rtol: the residual tolerance, relative to the largest ``|λ|``.

  Returns:
    ``(S, P)``.

  Raises:
    ValueError: for unconverged eigenpairs (with ``check``), or bad ``eta``/``num``/``mode``.
  """
  tg = tangent_gaussian(eig, alpha, clip=clip)  # validates shapes
  if check and hasattr(eig, "residuals"):
    linalg.check_eigenpairs(eig, rtol=check_rtol, name="eig")
  if _checks.is_concrete(eta) and not np.all(np.asarray(eta) >= 0):
    raise ValueError(f"`eta` must be >= 0; got {eta}.")
  _checks.check_positive("num", num)
  if mode not in _MODES:
    raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}.")
  k, p = tg.vectors.shape
  dtype = tg.vectors.dtype
  if mode == "single":
    if index is None:
      raise ValueError("`index` (eigenvector index in [0, k)) is required for mode='single'.")
    if _checks.is_concrete(index) and not 0 <= int(index) < k:
      raise ValueError(f"`index` must be in [0, {k}); got {index}.")
    zeta = jax.random.normal(key, (num, 1), dtype)
    scale = eta * jax.lax.rsqrt(tg.values[index] + tg.alpha)
    return scale * zeta * tg.vectors[index][None, :]
  z = jax.random.normal(key, (num, p), dtype)
  return eta * tangent_sqrt(tg, z, subspace_only=(mode == "subspace"))


def euclidean(theta_map: Array, v: Array) -> Array:
  """Euclidean Laplace samples ``θ_E = θ* + v``.

  Args:
    theta_map: ``θ*``, ``(P,)``.
    v: tangent velocities, ``(P,)`` or ``(S, P)``.

  Returns:
    ``θ* + v``, shaped like ``v``.

  Raises:
    ValueError: if ``theta_map`` is not ``(P,)``, or ``v`` is not ``(P,)`` or ``(S, P)`` with the
      same ``P``.
  """
  _checks.check_ndim("theta_map", theta_map, 1, "(P,)")
  _checks.check_ndim("v", v, (1, 2), "(P,) or (S, P)")
  _checks.check_last_dim("v", v, np.shape(theta_map)[0], "(..., P) with P = len(theta_map)")
  return jnp.expand_dims(theta_map, tuple(range(np.ndim(v) - 1))) + v


# ---------------------------------------------------------------------------
# Geodesics of G = I + g gᵀ.


def geodesic_speed(loss_fn: Callable[[Array], Array], theta: Array, velocity: Array) -> Array:
  """Squared speed ``γ̇ᵀ G γ̇ = ||γ̇||² + (gᵀγ̇)²`` with ``g = ∇L(θ)``, for ``G = I + g gᵀ``.

  Constant along an exact geodesic, so its drift measures the error of a numerical one.

  Args:
    loss_fn: ``L``, ``(P,) -> ()``, differentiable.
    theta: the point ``θ``, ``(P,)``.
    velocity: the tangent vector ``γ̇``, ``(P,)``.

  Returns:
    the squared speed, a scalar ``()``.
  """
  g = jax.grad(loss_fn)(theta)
  return jnp.sum(velocity**2) + jnp.dot(g, velocity) ** 2


def geodesic_rhs(loss_fn: Callable[[Array], Array]):
  """First-order geodesic system for state ``(θ, θ̇)``, as a diffrax vector field.

  ``d/dt (θ, θ̇) = (θ̇, − g (θ̇ᵀ H θ̇) / (1 + gᵀg))`` with ``(g, Hθ̇)`` from ONE
  :func:`memjax.linalg.hvp` call (one jvp∘grad).

  Args:
    loss_fn: ``L``, ``(P,) -> ()``, twice differentiable.

  Returns:
    ``rhs(t, state, args)`` with ``state = (θ (P,), θ̇ (P,))``.
  """

  def rhs(t, state, args):
    del t, args
    theta, vel = state
    g, hv = linalg.hvp(loss_fn, theta, vel)
    acc = -g * (jnp.dot(vel, hv) / (1.0 + jnp.dot(g, g)))
    return vel, acc

  return rhs


class RiemannianResult(NamedTuple):
  """Per-sample outcome of :func:`riemannian` (leading axis ``S``).

  Attributes:
    theta: ``γ(t_final)``, ``(S, P)``; for a failed sample this is the state
      where the solver stopped (``t_final < t1``), NOT a valid sample.
    velocity: ``γ̇(t_final)``, ``(S, P)``.
    result: diffrax result code (``0`` = successful), ``(S,)`` int.
    success: ``result == successful``, ``(S,)`` bool.
    t_final: time reached, ``(S,)``.
    num_steps, num_accepted_steps, num_rejected_steps: solver step counts, ``(S,)``.
      For the FSAL solvers here each step costs 6 new RHS evaluations (= 6
      jvp∘grad calls), plus O(1) at the start; diffrax does not count RHS calls.
    speed_drift: ``|s(t_final) − s(0)| / s(0)`` with ``s = γ̇ᵀGγ̇``
      (absolute difference when ``s(0) = 0``), ``(S,)``.
    ts: the requested save times ``(T,)`` or ``None``.
    trajectory: ``γ`` at ``ts``, ``(S, T, P)`` or ``None`` (``inf`` past a failure).
    trajectory_velocity: ``γ̇`` at ``ts``, ``(S, T, P)`` or ``None``.
  """

  theta: Array
  velocity: Array
  result: Array
  success: Array
  t_final: Array
  num_steps: Array
  num_accepted_steps: Array
  num_rejected_steps: Array
  speed_drift: Array
  ts: Array | None = None
  trajectory: Array | None = None
  trajectory_velocity: Array | None = None


_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}


def _check_riemannian_args(theta_map, v, solver, rtol, atol, t1, max_steps, saveat_ts):
  _checks.check_ndim("theta_map", theta_map, 1, "(P,)")
  _checks.check_ndim("v", v, 2, "(S, P)")
  _checks.check_last_dim("v", v, np.shape(theta_map)[0], "(S, P) with P = len(theta_map)")
  _checks.check_finite("theta_map", theta_map)
  _checks.check_finite("v", v)
  if solver not in _SOLVERS:
    raise ValueError(f"`solver` must be one of {tuple(_SOLVERS)}; got {solver!r}.")
  for name, val in (("rtol", rtol), ("atol", atol), ("t1", t1)):
    _checks.check_positive(name, val)
  if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
    raise ValueError(f"`max_steps` must be a positive int; got {max_steps!r}.")
  if saveat_ts is not None:
    _checks.check_ndim("saveat_ts", saveat_ts, 1, "(T,)")
    _checks.check_finite("saveat_ts", saveat_ts)
    if _checks.is_concrete(saveat_ts) and _checks.is_concrete(t1):
      ts = np.asarray(saveat_ts)
      if ts.size and (np.any(np.diff(ts) <= 0) or ts[0] < 0 or ts[-1] > t1):
        raise ValueError(f"`saveat_ts` must be strictly increasing within [0, t1={t1}]; got {ts}.")


def riemannian(
  loss_fn: Callable[[Array], Array],
  theta_map: Array,
  v: Array,
  *,
  solver: str = "tsit5",
  rtol=1e-6,
  atol=1e-8,
  t1=1.0,
  max_steps: int = 4096,
  dt0=None,
  saveat_ts: Array | None = None,
  mesh=None,
) -> RiemannianResult:
  """Riemannian Laplace samples ``θ_R = γ(t1)`` by solving the geodesic ODE per sample.

  Solves ``γ̈ = − g (γ̇ᵀ H γ̇)/(1 + gᵀg)``, ``γ(0) = θ*``, ``γ̇(0) = v_s`` on
  ``[0, t1]`` with diffrax (``solver`` + ``PIDController(rtol, atol)``,
  ``throw=False``), vmapped over the samples so each has its own adaptive
  steps and its own result code. Failed samples are reported, never replaced
  (see :func:`summarise_failures`).

  Args:
    loss_fn: ``(P,) -> ()``, twice differentiable.
    theta_map: ``θ*``, ``(P,)``.
    v: initial velocities, ``(S, P)``.
    solver: ``"tsit5"`` | ``"dopri5"`` | ``"dopri8"``.
    rtol, atol: PID controller tolerances.
    t1: end time (1 for the Laplace sample).
    max_steps: diffrax step budget per sample (static).
    dt0: initial step (``None``: chosen by diffrax).
    saveat_ts: optional increasing times in ``[0, t1]``, ``(T,)``, to return a trajectory.
    mesh: optional 1-D device mesh (:func:`memjax.distributed.make_mesh`): the
      samples are split over its devices; results equal the unsharded call.

  Returns:
    :class:`RiemannianResult`.

  Raises:
    ValueError: if ``theta_map`` is not ``(P,)`` or ``v`` not ``(S, P)`` with the same ``P``, either
      contains NaN/inf, ``solver`` is unknown, ``rtol``/``atol``/``t1`` is not ``> 0``,
      ``max_steps`` is not a positive int, or ``saveat_ts`` is not a finite, strictly increasing
      ``(T,)`` array within ``[0, t1]``. Solver failures are not raised: they are reported per
      sample in the result.

  References:
    "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
    arXiv:2602.00199; Bergamin et al., "Riemannian Laplace approximations for Bayesian neural
    networks", arXiv:2306.07158 (the geodesic sample of the loss-graph metric).
  """
  _check_riemannian_args(theta_map, v, solver, rtol, atol, t1, max_steps, saveat_ts)
  dtype = theta_map.dtype
  res = _riemannian(
    loss_fn,
    solver,
    int(max_steps),
    None if dt0 is None else float(dt0),
    mesh,
    theta_map,
    v,
    jnp.asarray(rtol, dtype),
    jnp.asarray(atol, dtype),
    jnp.asarray(t1, dtype),
    saveat_ts,
  )
  # A solve that met a non-finite loss is reported as "nonfinite" (diffrax says
  # max_steps_reached): probed only when something failed, so the hot path pays nothing.
  if _checks.is_concrete(res.result) and bool(np.any(np.asarray(res.result) != 0)):
    code = _relabel(loss_fn, res.theta, res.velocity, res.result, jnp.asarray(t1, dtype))
    res = res._replace(result=code)
  return res


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _riemannian(loss_fn, solver, max_steps, dt0, mesh, theta_map, v, rtol, atol, t1, saveat_ts):
  # One compiled program per (loss_fn, settings, shapes): a repeated call reuses it.
  term = diffrax.ODETerm(sampling.stop_on_nonfinite(geodesic_rhs(loss_fn)))
  controller = sampling.pid_controller(rtol, atol, t1)
  if saveat_ts is None:
    saveat = diffrax.SaveAt(t1=True)
  else:
    saveat = diffrax.SaveAt(ts=saveat_ts, t1=True)
  s0_all = jax.vmap(lambda vs: geodesic_speed(loss_fn, theta_map, vs))(v)

  def solve_one(v_s):
    sol = diffrax.diffeqsolve(
      term,
      _SOLVERS[solver](),
      0.0,
      t1,
      dt0,
      (theta_map, v_s),
      saveat=saveat,
      stepsize_controller=controller,
      max_steps=max_steps,
      throw=False,
    )
    thetas, vels = sol.ys
    return (
      thetas,
      vels,
      sol.ts[-1],
      sampling.result_code(sol.result),
      sol.result == diffrax.RESULTS.successful,
      sol.stats["num_steps"],
      sol.stats["num_accepted_steps"],
      sol.stats["num_rejected_steps"],
    )

  thetas, vels, t_final, code, ok, n_steps, n_acc, n_rej = distributed.map_rows(
    jax.vmap(solve_one), v, mesh=mesh
  )
  theta, vel = thetas[:, -1], vels[:, -1]
  s1 = jax.vmap(lambda th, ve: geodesic_speed(loss_fn, th, ve))(theta, vel)
  diff = jnp.abs(s1 - s0_all)
  drift = jnp.where(s0_all > 0, diff / jnp.where(s0_all > 0, s0_all, 1.0), diff)
  traj = traj_v = None
  if saveat_ts is not None:
    traj, traj_v = thetas[:, :-1], vels[:, :-1]
  return RiemannianResult(
    theta, vel, code, ok, t_final, n_steps, n_acc, n_rej, drift, saveat_ts, traj, traj_v
  )


@functools.partial(jax.jit, static_argnums=0)
def _relabel(loss_fn, theta, vel, code, t1):
  """Failed samples whose loss gradient is non-finite just ahead of where they stopped."""

  def one(th, ve, c):
    grads = [jax.grad(loss_fn)(th + d * t1 * ve) for d in (0.0, *sampling.PROBES_AHEAD)]
    return sampling.relabel_nonfinite(c, (th, ve, *grads))

  return jax.vmap(one)(theta, vel, code)


def summarise_failures(res: RiemannianResult) -> dict:
  """Count samples by diffrax outcome (needs concrete arrays; call outside ``jit``).

  Args:
    res: the output of :func:`riemannian`.

  Returns:
    ``{"total": S, "successful": n_ok, "failed": S − n_ok,
    "by_result": {name: count}, "messages": {name: diffrax message}}`` where
    ``name`` is the ``diffrax.RESULTS`` member name (e.g. ``"max_steps_reached"``).
  """
  codes = np.asarray(res.result).reshape(-1)
  by_result = sampling.count_results(codes)
  messages = {sampling.result_name(c): sampling.result_message(c) for c in np.unique(codes)}
  n_ok = int(np.sum(np.asarray(res.success)))
  return {
    "total": int(codes.size),
    "successful": n_ok,
    "failed": int(codes.size) - n_ok,
    "by_result": by_result,
    "messages": messages,
  }


# ---------------------------------------------------------------------------
# Prior precision by the Laplace evidence.


class PriorFit(NamedTuple):
  """Output of :func:`optimise_prior`.

  Attributes:
    alpha: the evidence-maximising prior precision ``α̂``.
    log_evidence: :func:`log_evidence` at ``α̂`` (with ``data_loss`` as given).
    effective_params: ``γ = Σ_i λ_i/(λ_i + α̂)``, the number of well-determined directions.
    num_negative: data-term Ritz values below 0 (clipped to 0, as in the tangent Gaussian).
  """

  alpha: Array
  log_evidence: Array
  effective_params: Array
  num_negative: Array


def _clipped(values):
  return jnp.maximum(values, 0.0)


def log_evidence(values, theta_map, alpha, *, data_loss=0.0, num_params: int | None = None):
  """Laplace log marginal likelihood of the prior precision ``α`` (low-rank plus isotropic).

  ``log p(D | α) ≈ −L_D(θ*) − (α/2)||θ*||² + (P/2) log α − ½ log det(H_D + αI)`` for a Gaussian
  prior ``N(0, α⁻¹I)`` and data-term Hessian ``H_D``. With the top-k data-term eigenvalues
  ``λ_i`` (clipped at 0) and ``H_D`` taken as zero on the complement of their span, the
  log-determinant is ``Σ_i log(λ_i + α) + (P − k) log α`` in closed form.

  Args:
    values: data-term eigenvalues ``λ`` (``LaplaceFit.eig.values``), ``(k,)``.
    theta_map: ``θ*``, ``(P,)``.
    alpha: ``α > 0`` (scalar or array: evaluated elementwise).
    data_loss: ``L_D(θ*)``, the data term at ``θ*`` (a constant in ``α``).
    num_params: ``P`` (default ``len(theta_map)``).

  Returns:
    the log evidence, shaped like ``alpha``.

  References:
    MacKay, "Bayesian Interpolation", Neural Computation 4(3), 1992; Immer et al., "Scalable
    Marginal Likelihood Estimation for Model Selection in Deep Learning", arXiv:2104.04975.
  """
  values, theta_map = _check_evidence_args(values, theta_map)
  _checks.check_positive("alpha", alpha)
  p = theta_map.shape[0] if num_params is None else int(num_params)
  k = values.shape[0]
  if p < k:
    raise ValueError(f"`num_params` must be >= k = {k}; got {p}.")
  lam = _clipped(values)
  alpha = jnp.asarray(alpha, theta_map.dtype)
  lam = jnp.reshape(lam, (1,) * alpha.ndim + lam.shape)
  logdet = jnp.sum(jnp.log(lam + alpha[..., None]), axis=-1) + (p - k) * jnp.log(alpha)
  sq = jnp.sum(theta_map**2)
  return -data_loss - 0.5 * alpha * sq + 0.5 * p * jnp.log(alpha) - 0.5 * logdet


def _check_evidence_args(values, theta_map):
  _checks.check_ndim("values", values, 1, "(k,)")
  _checks.check_ndim("theta_map", theta_map, 1, "(P,)")
  _checks.check_finite("values", values)
  _checks.check_finite("theta_map", theta_map)
  theta_map = _checks.as_float("theta_map", theta_map)
  return jnp.asarray(values, theta_map.dtype), theta_map


def optimise_prior(
  values, theta_map, *, data_loss=0.0, bounds=(1e-8, 1e8), num_iters: int = 200
) -> PriorFit:
  """The prior precision ``α̂`` maximising :func:`log_evidence` (post hoc, at fixed ``θ*``).

  ``∂/∂α log p(D | α) = 0`` is MacKay's fixed point ``α ||θ*||² = γ(α)``,
  ``γ(α) = Σ_i λ_i/(λ_i + α)``; ``α||θ*||² − γ(α)`` is strictly increasing, so the maximiser is
  unique and found by bisection on ``log α`` within ``bounds`` (``num_iters`` halvings; the
  whole search is one compiled program). The ``P − k`` directions without curvature do not move
  ``α̂`` (their prior and posterior variances cancel in the evidence).

  Args:
    values: data-term eigenvalues ``(k,)`` (``LaplaceFit.eig.values``; clipped at 0).
    theta_map: ``θ*``, ``(P,)``.
    data_loss: ``L_D(θ*)`` for the reported evidence value (does not move ``α̂``).
    bounds: search interval ``(α_lo, α_hi)``, ``0 < α_lo < α_hi``.
    num_iters: bisection steps.

  Returns:
    :class:`PriorFit`.

  Raises:
    ValueError: when the maximiser lies outside ``bounds`` — no positive curvature
      (the evidence grows as ``α → 0``) or ``θ* = 0`` (it grows as ``α → ∞``) — or for bad
      arguments.

  References:
    MacKay, "Bayesian Interpolation", Neural Computation 4(3), 1992; Immer et al., "Scalable
    Marginal Likelihood Estimation for Model Selection in Deep Learning", arXiv:2104.04975.
  """
  values, theta_map = _check_evidence_args(values, theta_map)
  lo, hi = (float(b) for b in bounds)
  if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
    raise ValueError(f"`bounds` must satisfy 0 < lo < hi (finite); got {bounds}.")
  if not (isinstance(num_iters, (int, np.integer)) and num_iters >= 1):
    raise ValueError(f"`num_iters` must be a positive int; got {num_iters!r}.")
  dtype = theta_map.dtype
  h_lo, h_hi = (float(x) for x in _prior_residual(values, theta_map, jnp.asarray([lo, hi], dtype)))
  if h_lo >= 0:
    raise ValueError(
      f"the Laplace evidence increases as alpha -> 0 down to bounds[0] = {lo:g}: the data term "
      f"has no positive curvature to balance the prior (largest eigenvalue "
      f"{float(jnp.max(values)):.4g}, ||θ*||² = {float(jnp.sum(theta_map**2)):.4g})."
    )
  if h_hi <= 0:
    raise ValueError(
      f"the Laplace evidence increases as alpha -> inf up to bounds[1] = {hi:g} "
      f"(||θ*||² = {float(jnp.sum(theta_map**2)):.4g}): widen `bounds` or check `theta_map`."
    )
  alpha = _bisect_prior(
    int(num_iters), values, theta_map, jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)
  )
  lam = _clipped(values)
  return PriorFit(
    alpha,
    log_evidence(values, theta_map, alpha, data_loss=data_loss),
    jnp.sum(lam / (lam + alpha)),
    jnp.sum(values < 0),
  )


def _prior_residual(values, theta_map, alpha):
  lam = _clipped(values)
  lam = jnp.reshape(lam, (1,) * jnp.ndim(alpha) + lam.shape)
  gamma = jnp.sum(lam / (lam + alpha[..., None]), axis=-1)
  return alpha * jnp.sum(theta_map**2) - gamma


@functools.partial(jax.jit, static_argnums=0)
def _bisect_prior(num_iters, values, theta_map, lo, hi):
  def body(_, bracket):
    a, b = bracket
    mid = 0.5 * (a + b)
    up = _prior_residual(values, theta_map, jnp.exp(mid)) < 0
    return jnp.where(up, mid, a), jnp.where(up, b, mid)

  a, b = jax.lax.fori_loop(0, num_iters, body, (jnp.log(lo), jnp.log(hi)))
  return jnp.exp(0.5 * (a + b))


# ---------------------------------------------------------------------------
# Convenience: the whole tangent-space fit from a flat loss.


def fit_eigenpairs(
  loss_fn: Callable, theta_map: Array, k: int, key: Array, num_iters: int | None = None
) -> linalg.Eigenpairs:
  """Top-k Ritz pairs of ``H = ∇²L(θ*)`` by Lanczos on HVPs (``jvp∘grad``), raw (unclipped) values.

  Args:
    loss_fn: ``(P,) -> ()``.
    theta_map: ``θ*``, ``(P,)``.
    k: number of eigenpairs.
    key: PRNG key for the Lanczos start vector.
    num_iters: Lanczos iterations (default as in :func:`memjax.linalg.lanczos_topk`).

  Returns:
    :class:`memjax.linalg.Eigenpairs`: the ``k`` largest Ritz values ``(k,)`` in decreasing order,
    their orthonormal vectors ``(k, P)`` and residuals ``||H u − λu||`` ``(k,)``.

  Raises:
    ValueError: if ``theta_map`` is not ``(P,)`` or contains NaN/inf, or (from
      :func:`memjax.linalg.lanczos_topk`) ``k`` is not in ``[1, P]`` or ``num_iters`` not in
      ``[k, P]``.
  """
  _checks.check_ndim("theta_map", theta_map, 1, "(P,)")
  _checks.check_finite("theta_map", theta_map)
  for name, val in (("k", k), ("num_iters", num_iters)):
    if val is not None and not (isinstance(val, (int, np.integer)) and val >= 1):
      raise ValueError(f"`{name}` must be a positive int; got {val!r}.")
  return _fit_eigenpairs(
    loss_fn, int(k), None if num_iters is None else int(num_iters), theta_map, key
  )


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _fit_eigenpairs(loss_fn, k, num_iters, theta, key):
  matvec = lambda v: linalg.hvp(loss_fn, theta, v)[1]
  return linalg.lanczos_topk(matvec, theta.shape[0], k, key, num_iters=num_iters, dtype=theta.dtype)


# ---------------------------------------------------------------------------
# The typed pipeline: one fit, named samplers that share one protocol.


class LaplaceFit(NamedTuple):
  """Everything a posterior sampler needs, from :func:`fit`.

  Attributes:
    apply_fn: the network field ``u(params, x, t)``.
    subset: :class:`memjax.curvature.ParamSubset` of the Bayesian leaves (frozen at the MAP);
      ``subset.merge(θ_B)`` gives full params.
    loss_fn: the curvature loss ``L(θ_B)`` on the frozen triples.
    theta_map: ``θ*_B``, ``(P,)``.
    eig: top-k :class:`memjax.linalg.Eigenpairs` of the DATA term's Hessian ``∇²L(θ*) − αI``
      (raw Ritz values; the prior precision ``α`` is added back exactly once, by the tangent
      Gaussian).
    alpha: prior precision ``α`` of the tangent Gaussian.
    triples: the frozen curvature triples ``(x1 (B, D), x0 (B, D), t (B,))``.
    grad_norm: ``||∇L(θ*)||`` at the ``θ*`` used (after :func:`refine_map`, if asked for).
    grad_norm_initial: ``||∇L||`` at the trained parameters, before any refinement.
    linearised_loss_fn: the loss of the model linearised in its weights at ``θ*``
      (:func:`linearised_loss`), used by the ``"linearised"`` sampler.
    min_eigenvalue: smallest Ritz value of the FULL ``∇²L(θ*)`` (prior included), by Lanczos on
      ``−∇²L``; negative beyond tolerance means ``θ*`` is a saddle (:func:`check_minimum`).
      ``nan`` when not computed (``fit(..., check_minimum=False)``).
  """

  apply_fn: Callable
  subset: curvature.ParamSubset
  loss_fn: Callable[[Array], Array]
  theta_map: Array
  eig: linalg.Eigenpairs
  alpha: Array
  triples: tuple[Array, Array, Array]
  grad_norm: Array
  grad_norm_initial: Array
  linearised_loss_fn: Callable[[Array], Array] | None = None
  min_eigenvalue: Array | float = float("nan")


def fit(
  apply_fn,
  params,
  data: Array,
  key: Array,
  *,
  k: int,
  alpha,
  num_triples: int,
  select=None,
  loss_scale=None,
  num_data: int | None = None,
  num_iters: int | None = None,
  lanczos_key: Array | None = None,
  refine_tol: float | None = None,
  refine_max_steps: int = 500,
  check_minimum: bool = True,
  min_iters: int = 32,
) -> LaplaceFit:
  """Fit the tangent Gaussian of a flow-matching model at its MAP ``params``.

  Draws ``num_triples`` frozen triples from ``data`` (:func:`memjax.curvature.make_triples`),
  builds the curvature loss ``L(θ_B) = s Σ_b ℓ_b + (α/2)||θ_B||²`` on the leaves chosen by
  ``select`` (:func:`memjax.curvature.param_subset`) and runs Lanczos on its Hessian-vector
  products (:func:`fit_eigenpairs`). Arrays keep the dtype they are given (cast ``params`` and
  ``data`` to float64 first for a float64 posterior).

  The Laplace approximation expands ``L`` at a stationary point. A network trained by stochastic
  flow matching is not stationary for the frozen-triple loss (its gradient there is Monte-Carlo
  noise of the triples), so with ``refine_tol`` the subset parameters are first refined on ``L``
  by L-BFGS (:func:`refine_map`) until ``||∇L|| ≤ refine_tol``; ``grad_norm`` reports where it
  ended. The eigenpairs are those of the data term ``∇²L − αI`` (Lanczos runs on ``∇²L`` and
  ``α`` is subtracted from the Ritz values, the vectors are unchanged), so the tangent Gaussian
  ``Σ = U diag(1/(λ + α)) Uᵀ + α⁻¹(I − UUᵀ)`` counts the prior once.

  Args:
    apply_fn: ``u(params, x, t)``.
    params: MAP params pytree.
    data: training set ``(N, D)``.
    key: PRNG key of the frozen triples.
    k: number of eigenpairs.
    alpha: prior precision ``α > 0``.
    num_triples: ``B``.
    select: leaf selection (``None``: all parameters).
    loss_scale: ``s`` (``None``: ``num_data / B``).
    num_data: ``N`` for the default ``s``.
    num_iters: Lanczos depth (default ``min(P, 2k + 10)``).
    lanczos_key: PRNG key of the Lanczos start vector (default ``fold_in(key, 1)``).
    refine_tol: refine ``θ*`` on ``L`` until ``||∇L|| ≤ refine_tol`` (``None``: no refinement).
    refine_max_steps: L-BFGS step budget of the refinement.
    check_minimum: also estimate the smallest eigenvalue of ``∇²L(θ*)`` (``min_iters`` more
      Lanczos steps on ``−∇²L``) so that samplers can refuse a saddle (:func:`check_minimum`).
    min_iters: Lanczos depth of that estimate.

  Returns:
    :class:`LaplaceFit`.

  Raises:
    ValueError: for bad arguments, naming the argument: ``data`` not ``(N, D)`` or not finite,
      ``num_triples`` not ``> 0``, ``select`` choosing no leaf, ``alpha < 0``, ``num_data``
      missing or not ``> 0`` with ``loss_scale=None``, ``refine_tol``/``refine_max_steps`` not
      positive, ``k``/``num_iters`` out of range for Lanczos.

  References:
    "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
    arXiv:2602.00199 (the curvature loss and its tangent Gaussian); Bergamin et al., "Riemannian
    Laplace approximations for Bayesian neural networks", arXiv:2306.07158 (the linearised loss).
  """
  k_lan = jax.random.fold_in(key, 1) if lanczos_key is None else lanczos_key
  subset = curvature.param_subset(params, select or None)
  triples = curvature.make_triples(key, data, num_triples)
  loss_fn = curvature.curvature_loss(
    apply_fn, params, *triples, subset=subset, alpha=alpha, loss_scale=loss_scale, num_data=num_data
  )
  theta_map = subset.theta
  g0 = jnp.linalg.norm(_grad_jit(loss_fn, theta_map))
  g1 = g0
  if refine_tol is not None:
    ref = refine_map(loss_fn, theta_map, tol=refine_tol, max_steps=refine_max_steps)
    theta_map, g1 = ref.theta, ref.grad_norm
  alpha = jnp.asarray(alpha, theta_map.dtype)
  eig = fit_eigenpairs(loss_fn, theta_map, k, k_lan, num_iters=num_iters)
  eig = eig._replace(values=eig.values - alpha)  # data term: the prior enters Σ once
  if loss_scale is None:
    _checks.check_positive("num_data", num_data)
    loss_scale = num_data / num_triples
  residual_fn = curvature.curvature_residual_fn(apply_fn, params, *triples, subset=subset)
  lin = linearised_loss(residual_fn, theta_map, alpha, loss_scale)
  lam_min = float("nan")
  if check_minimum:
    k_min = jax.random.fold_in(k_lan, 2)
    lam_min = _min_eigenvalue(loss_fn, min(int(min_iters), theta_map.shape[0]), theta_map, k_min)
  return LaplaceFit(apply_fn, subset, loss_fn, theta_map, eig, alpha, triples, g1, g0, lin, lam_min)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _min_eigenvalue(loss_fn, num_iters, theta, key):
  matvec = lambda v: -linalg.hvp(loss_fn, theta, v)[1]
  top = linalg.lanczos_topk(matvec, theta.shape[0], 1, key, num_iters=num_iters, dtype=theta.dtype)
  return -top.values[0]


def linearised_loss(
  residual_fn: Callable[[Array], Array], theta_lin: Array, alpha, loss_scale
) -> Callable[[Array], Array]:
  """The curvature loss of the model linearised in its weights at ``θ_lin``.

  ``L_lin(θ) = s Σ_b ||r_b(θ_lin) + J_b(θ_lin)(θ − θ_lin)||² + (α/2)||θ||²`` with the residuals
  ``r_b`` of :func:`memjax.curvature.curvature_residual_fn` and their Jacobian ``J_b``: a quadratic
  in ``θ`` whose Hessian is the generalised Gauss–Newton matrix ``2s JᵀJ + αI`` at every ``θ``,
  and whose value and gradient equal those of the curvature loss at ``θ_lin``. Geodesics of
  ``G = I + ∇L_lin ∇L_linᵀ`` are the linearised Riemannian Laplace samples: one Jacobian-vector
  and one vector-Jacobian product of the network per Hessian product instead of a second-order
  derivative.

  Args:
    residual_fn: ``r(θ)``, ``(P,) -> (B, D)``.
    theta_lin: linearisation point ``θ_lin``, ``(P,)`` (the MAP).
    alpha: prior precision ``α``.
    loss_scale: the data-term scale ``s``.

  Returns:
    ``loss_fn(θ)``: ``(P,) -> ()``.

  References:
    Bergamin et al., "Riemannian Laplace approximations for Bayesian neural networks",
    arXiv:2306.07158 (the linearised manifold).
  """
  _checks.check_ndim("theta_lin", theta_lin, 1, "(P,)")
  _checks.check_finite("theta_lin", theta_lin)

  def loss_fn(theta: Array) -> Array:
    r0, jd = jax.jvp(residual_fn, (theta_lin,), (theta - theta_lin,))
    return loss_scale * jnp.sum((r0 + jd) ** 2) + 0.5 * alpha * jnp.sum(theta**2)

  return loss_fn


def tilt(lfit: LaplaceFit) -> LaplaceFit:
  """Make ``θ*`` stationary: ``L̃(θ) = L(θ) − g₀ᵀ(θ − θ*)`` with ``g₀ = ∇L(θ*)``.

  A network trained by stochastic flow matching is not stationary for the frozen-triple loss (its
  gradient there is the Monte-Carlo noise of the triples). Tilting removes that gradient exactly
  while keeping the Hessian (so the eigenpairs stay valid): ``∇L̃(θ*) = 0``, ``∇²L̃ = ∇²L``. The
  linearised loss, whose gradient at ``θ*`` is the same ``g₀``, is tilted by the same term.

  Args:
    lfit: a :class:`LaplaceFit`.

  Returns:
    the fit with tilted ``loss_fn`` (and ``linearised_loss_fn``) and ``grad_norm`` recomputed.
  """
  loss, lin, theta0 = lfit.loss_fn, lfit.linearised_loss_fn, lfit.theta_map
  g0 = _grad_jit(loss, theta0)

  def loss_tilted(theta):
    return loss(theta) - jnp.dot(g0, theta - theta0)

  lin_tilted = None
  if lin is not None:

    def lin_tilted(theta):
      return lin(theta) - jnp.dot(g0, theta - theta0)

  g1 = jnp.linalg.norm(_grad_jit(loss_tilted, theta0))
  return lfit._replace(loss_fn=loss_tilted, linearised_loss_fn=lin_tilted, grad_norm=g1)


def with_prior(lfit: LaplaceFit, alpha) -> LaplaceFit:
  """The same fit with prior precision ``alpha``: ``L ← L + ((α − α₀)/2)||θ||²``.

  The eigenpairs are those of the data term and do not depend on ``α``; the losses (used by the
  geodesics) get the new prior term, and ``grad_norm`` / ``min_eigenvalue`` are updated
  (``∇²L`` shifts by ``α − α₀``). ``θ*`` is kept: the prior is re-selected post hoc at the
  trained weights (as :func:`optimise_prior` does), not re-trained.

  Args:
    lfit: a :class:`LaplaceFit`.
    alpha: the new prior precision ``α > 0``.

  Returns:
    :class:`LaplaceFit`.
  """
  _checks.check_positive("alpha", alpha)
  new = jnp.asarray(alpha, lfit.theta_map.dtype)
  delta = new - lfit.alpha
  loss, lin = lfit.loss_fn, lfit.linearised_loss_fn

  def loss_new(theta):
    return loss(theta) + 0.5 * delta * jnp.sum(theta**2)

  lin_new = None
  if lin is not None:

    def lin_new(theta):
      return lin(theta) + 0.5 * delta * jnp.sum(theta**2)

  g1 = jnp.linalg.norm(_grad_jit(loss_new, lfit.theta_map))
  return lfit._replace(
    loss_fn=loss_new,
    linearised_loss_fn=lin_new,
    alpha=new,
    grad_norm=g1,
    min_eigenvalue=lfit.min_eigenvalue + delta,
  )


def check_minimum(lfit: LaplaceFit, rtol: float = 1e-2) -> None:
  """Refuse a fit whose ``θ*`` is a saddle of ``L`` (a Laplace approximation needs a minimum).

  ``θ*`` is taken as a saddle when the smallest eigenvalue of ``∇²L(θ*)`` (``lfit.min_eigenvalue``)
  is below ``−rtol · λ_max`` (``λ_max = max(eig.values) + α``); a ``nan`` estimate (not computed)
  passes.

  Args:
    lfit: a :class:`LaplaceFit` (``lfit.min_eigenvalue`` from ``fit(..., check_minimum=True)``).
    rtol: tolerance on the negative eigenvalue, relative to ``λ_max``.

  Raises:
    ValueError: for a saddle, naming the eigenvalue and the ways out, or for an infinite
      ``lfit.min_eigenvalue``.
  """
  lam_min = float(lfit.min_eigenvalue)
  if not np.isfinite(lam_min):
    if np.isnan(lam_min):
      return
    raise ValueError(f"the smallest eigenvalue of ∇²L(θ*) is not finite ({lam_min}).")
  lam_max = float(np.max(np.asarray(lfit.eig.values))) + float(lfit.alpha)
  if lam_min < -rtol * abs(lam_max):
    raise ValueError(
      f"θ* is a saddle point of the curvature loss: ∇²L(θ*) has eigenvalue {lam_min:.4g} < 0 "
      f"(largest {lam_max:.4g}); the Laplace approximation there is not a posterior. Find a "
      "minimum first (laplace.refine_map, a larger `alpha`), or pass check=False to sample with "
      "the negative curvature clipped."
    )


@functools.partial(jax.jit, static_argnums=0)
def _grad_jit(loss_fn, theta):
  return jax.grad(loss_fn)(theta)


class Refined(NamedTuple):
  """Output of :func:`refine_map`.

  Attributes:
    theta: the refined ``θ*``, ``(P,)``.
    grad_norm: ``||∇L(θ)||`` at the end.
    initial_grad_norm: ``||∇L||`` at the start.
    steps: L-BFGS steps taken.
    converged: ``grad_norm ≤ tol``.
  """

  theta: Array
  grad_norm: Array
  initial_grad_norm: Array
  steps: Array
  converged: Array


def refine_map(
  loss_fn: Callable[[Array], Array], theta: Array, *, tol: float, max_steps: int = 500
) -> Refined:
  """Refine ``θ`` to a stationary point of ``L`` with optax L-BFGS (zoom line search).

  Steps until ``||∇L(θ)|| ≤ tol`` or ``max_steps``; the whole loop is one compiled
  ``lax.while_loop`` (reused across calls with the same ``loss_fn``). The loop also stops at a
  non-finite gradient norm; ``converged`` is then ``False``.

  Args:
    loss_fn: ``L``, ``(P,) -> ()``, differentiable.
    theta: the starting point, ``(P,)``.
    tol: gradient-norm target ``> 0``.
    max_steps: L-BFGS step budget (a positive int; static).

  Returns:
    :class:`Refined`.

  Raises:
    ValueError: for a non-positive ``tol`` or ``max_steps``, or a ``theta`` that is not ``(P,)``
      or contains NaN/inf.
  """
  _checks.check_ndim("theta", theta, 1, "(P,)")
  _checks.check_finite("theta", theta)
  _checks.check_positive("tol", tol)
  if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
    raise ValueError(f"`max_steps` must be a positive int; got {max_steps!r}.")
  return _refine_jit(loss_fn, int(max_steps), theta, jnp.asarray(tol, theta.dtype))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _refine_jit(loss_fn, max_steps, theta, tol):
  import optax

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss_fn)
  g0 = jnp.linalg.norm(jax.grad(loss_fn)(theta))

  def cond(carry):
    _, _, step, gnorm = carry
    return (step < max_steps) & (gnorm > tol) & jnp.isfinite(gnorm)

  def body(carry):
    th, state, step, _ = carry
    value, grad = value_and_grad(th, state=state)
    updates, state = opt.update(grad, state, th, value=value, grad=grad, value_fn=loss_fn)
    th = optax.apply_updates(th, updates)
    return th, state, step + 1, jnp.linalg.norm(jax.grad(loss_fn)(th))

  init = (theta, opt.init(theta), jnp.asarray(0, jnp.int32), g0)
  th, _, steps, gnorm = jax.lax.while_loop(cond, body, init)
  return Refined(th, gnorm, g0, steps, gnorm <= tol)


class PosteriorSamples(NamedTuple):
  """Output of a posterior sampler (leading axis ``S``).

  Attributes:
    theta: flat samples ``(S, P)``; rows with ``success = False`` are NOT valid samples.
    success: ``(S,)`` bool.
    details: sampler-specific diagnostics (:class:`RiemannianResult` for geodesics) or ``None``.
  """

  theta: Array
  success: Array
  details: RiemannianResult | None = None


@functools.partial(jax.jit, static_argnums=0)
def _finite_loss(loss_fn, thetas):
  return jax.vmap(lambda th: jnp.isfinite(loss_fn(th)))(thetas)


def euclidean_sampler(lfit: LaplaceFit, v: Array, **options) -> PosteriorSamples:
  """Euclidean Laplace samples ``θ* + v`` (no options).

  A sample is successful when the curvature loss is finite there; one that lands in a region
  where the loss is ``nan``/``inf`` is reported as failed, never returned as a sample.

  Args:
    lfit: a :class:`LaplaceFit`.
    v: tangent velocities, ``(S, P)`` (:func:`sample_velocities`).
    **options: must be empty (accepted for the common sampler protocol).

  Returns:
    :class:`PosteriorSamples` with ``details = None``.

  Raises:
    ValueError: if any option is given, or ``v`` does not match ``lfit.theta_map``.
  """
  if options:
    raise ValueError(f"the euclidean sampler takes no options; got {sorted(options)}.")
  theta = euclidean(lfit.theta_map, v)
  return PosteriorSamples(theta, _finite_loss(lfit.loss_fn, theta), None)


def riemannian_sampler(lfit: LaplaceFit, v: Array, **options) -> PosteriorSamples:
  """Riemannian Laplace samples ``θ_R = γ(1)``, geodesics of ``G = I + ∇L ∇Lᵀ`` from ``θ*``.

  ``L`` is ``lfit.loss_fn``; a sample is successful when its geodesic solve is.

  Args:
    lfit: a :class:`LaplaceFit`.
    v: initial velocities, ``(S, P)`` (:func:`sample_velocities`).
    **options: keywords of :func:`riemannian` (``solver``, ``rtol``, ``t1``, ...).

  Returns:
    :class:`PosteriorSamples` with the :class:`RiemannianResult` as ``details``.

  Raises:
    ValueError: as :func:`riemannian`, for bad ``v`` or options.

  References:
    "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
    arXiv:2602.00199.
  """
  res = riemannian(lfit.loss_fn, lfit.theta_map, v, **options)
  return PosteriorSamples(res.theta, res.success, res)


def linearised_sampler(lfit: LaplaceFit, v: Array, **options) -> PosteriorSamples:
  """Linearised Riemannian Laplace samples: geodesics of ``G = I + ∇L_lin ∇L_linᵀ``.

  ``L_lin`` is ``lfit.linearised_loss_fn`` (:func:`linearised_loss`: the network linearised in
  its weights at ``θ*``); ``options`` are the keywords of :func:`riemannian`. A geodesic that
  succeeded but ends where the TRUE curvature loss is not finite is reported as failed.

  Args:
    lfit: a :class:`LaplaceFit` with ``linearised_loss_fn`` (as built by :func:`fit`).
    v: initial velocities, ``(S, P)`` (:func:`sample_velocities`).
    **options: keywords of :func:`riemannian`.

  Returns:
    :class:`PosteriorSamples` with the :class:`RiemannianResult` as ``details``.

  Raises:
    ValueError: when the fit carries no linearised loss, or as :func:`riemannian` for bad ``v``
      or options.

  References:
    Bergamin et al., "Riemannian Laplace approximations for Bayesian neural networks",
    arXiv:2306.07158 (the linearised manifold).
  """
  if lfit.linearised_loss_fn is None:
    raise ValueError("`lfit` has no linearised_loss_fn; build it with laplace.fit.")
  res = riemannian(lfit.linearised_loss_fn, lfit.theta_map, v, **options)
  ok = jnp.logical_and(res.success, _finite_loss(lfit.loss_fn, res.theta))
  return PosteriorSamples(res.theta, ok, res)


SAMPLERS: dict[str, Callable[..., PosteriorSamples]] = {
  "euclidean": euclidean_sampler,
  "riemannian": riemannian_sampler,
  "linearised": linearised_sampler,
}


def posterior_samples(
  lfit: LaplaceFit,
  eta,
  key: Array,
  num: int,
  *,
  samplers=("euclidean", "riemannian"),
  mode: str = "subspace",
  index: int | None = None,
  options: dict | None = None,
  check: bool = True,
) -> tuple[Array, dict[str, PosteriorSamples]]:
  """Samples of several named samplers from the SAME tangent velocities ``v`` (paired).

  ``v = η Σ^{1/2} z`` (:func:`sample_velocities` with ``lfit.eig``, ``lfit.alpha``); each name
  in ``samplers`` is looked up in :data:`SAMPLERS` and called as ``sampler(lfit, v, **opts)``
  with ``opts = options.get(name, {})``. Pass the same ``key`` for several ``eta`` to get
  samples that differ only in scale. ``mode``/``index`` as in :func:`sample_velocities`
  (``"single"`` with ``index = 0``: along the top eigenvector only).

  With ``check``, unconverged eigenpairs are refused (:func:`sample_velocities`) and, in
  ``"full"`` mode, so is a fit whose ``θ*`` is a saddle (:func:`check_minimum`): the full
  Gaussian gives the complement of the top-k span the prior variance ``1/α``, which a negative
  curvature there contradicts. The ``"subspace"``/``"single"`` modes only use the top-k span,
  on which the Hessian is ``diag(λ + α) > 0`` — a minimum of ``L`` restricted to it — so they are
  defined at a saddle too (``lfit.min_eigenvalue`` reports it).

  Args:
    lfit: a :class:`LaplaceFit`.
    eta: step scale ``η ≥ 0``.
    key: PRNG key of ``z``.
    num: number of samples ``S``.
    samplers: names in :data:`SAMPLERS`.
    mode: ``"full"``, ``"subspace"`` or ``"single"`` (:func:`sample_velocities`).
    index: eigenvector index for ``"single"``.
    options: ``{name: keywords}`` for the samplers (e.g. ``{"riemannian": {"rtol": 1e-8}}``).
    check: refuse unconverged eigenpairs and, in ``"full"`` mode, a saddle.

  Returns:
    ``(v (S, P), {name: PosteriorSamples})``.

  Raises:
    ValueError: for an unknown sampler name, a saddle, unconverged eigenpairs, or bad
      ``eta``/``num``/``mode``/``index`` (:func:`sample_velocities`).
  """
  unknown = [n for n in samplers if n not in SAMPLERS]
  if unknown:
    raise ValueError(
      f"`samplers` must name entries of laplace.SAMPLERS {tuple(SAMPLERS)}; got {unknown}."
    )
  options = options or {}
  if check and mode == "full" and _checks.is_concrete(lfit.min_eigenvalue):
    check_minimum(lfit)
  v = sample_velocities(lfit.eig, lfit.alpha, eta, key, num, mode=mode, index=index, check=check)
  return v, {n: SAMPLERS[n](lfit, v, **options.get(n, {})) for n in samplers}
