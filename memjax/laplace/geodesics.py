"""Geodesics of the loss-graph metric ``G(θ) = I + ∇L ∇Lᵀ``: the Riemannian Laplace sample.

``θ_R = γ(1)`` for the geodesic ``γ`` with ``γ(0) = θ*``, ``γ̇(0) = v``:

  ``γ̈ = − g (γ̇ᵀ H γ̇) / (1 + gᵀg)``,  ``g = ∇L(γ)``,  ``H = ∇²L(γ)``.

Losses follow diffrax's convention: ``loss_fn(θ)``, or ``loss_fn(θ, args)`` when ``args`` is
given. ``loss_fn`` is a static argument of the compiled solve and ``args`` a traced one, so a loss
whose data changes between calls (new triples, a tilt, a new ``α``) compiles once when its data is
passed as ``args`` (:class:`memjax.curvature.Loss` with a :class:`memjax.curvature.CurvatureLoss`).

References:
  "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
  arXiv:2602.00199; Bergamin et al., "Riemannian Laplace approximations for Bayesian neural
  networks", arXiv:2306.07158.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, distributed, linalg, sampling

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class _NoArgs:
  """``loss_fn(θ)`` seen as ``loss(θ, args)`` (hashable: equal for the same ``loss_fn``)."""

  fn: Callable

  def __call__(self, theta, args):
    del args
    return self.fn(theta)


def as_loss(loss_fn: Callable, args: Any = None) -> Callable:
  """The two-argument form ``loss(θ, args)`` of ``loss_fn`` (diffrax's ``args`` convention).

  Args:
    loss_fn: ``loss_fn(θ)`` when ``args is None``, else ``loss_fn(θ, args)``.
    args: the loss's data (a pytree) or ``None``.

  Returns:
    a hashable callable ``(θ, args) -> ()`` to pass as a static argument of ``jit``.

  Raises:
    ValueError: if ``loss_fn`` is not callable.
  """
  if not callable(loss_fn):
    raise ValueError(f"`loss_fn` must be callable; got {type(loss_fn).__name__}.")
  return _NoArgs(loss_fn) if args is None else loss_fn


def geodesic_speed(loss_fn: Callable, theta: Array, velocity: Array, args: Any = None) -> Array:
  """Squared speed ``γ̇ᵀ G γ̇ = ||γ̇||² + (gᵀγ̇)²`` with ``g = ∇L(θ)``, for ``G = I + g gᵀ``.

  Constant along an exact geodesic, so its drift measures the error of a numerical one.

  Args:
    loss_fn: ``L``, ``(P,) -> ()`` (or ``(P,), args -> ()``), differentiable.
    theta: the point ``θ``, ``(P,)``.
    velocity: the tangent vector ``γ̇``, ``(P,)``.
    args: the loss's data (``None``: ``loss_fn`` takes ``θ`` alone).

  Returns:
    the squared speed, a scalar ``()``.
  """
  return _speed(as_loss(loss_fn, args), theta, velocity, args)


def geodesic_rhs(loss: Callable):
  """First-order geodesic system for state ``(θ, θ̇)``, as a diffrax vector field.

  ``d/dt (θ, θ̇) = (θ̇, − g (θ̇ᵀ H θ̇) / (1 + gᵀg))`` with ``(g, Hθ̇)`` from ONE
  :func:`memjax.linalg.hvp` call (one jvp∘grad).

  Args:
    loss: ``L(θ, args)``, ``(P,), args -> ()``, twice differentiable
      (:func:`~memjax.laplace.as_loss` turns a one-argument loss into this form).

  Returns:
    ``rhs(t, state, args)`` with ``state = (θ (P,), θ̇ (P,))``; diffrax passes the solve's
    ``args`` through to ``loss``.
  """

  def rhs(t, state, args):
    del t
    theta, vel = state
    g, hv = linalg.hvp(functools.partial(_call, loss, args=args), theta, vel)
    acc = -g * (jnp.dot(vel, hv) / (1.0 + jnp.dot(g, g)))
    return vel, acc

  return rhs


class RiemannianResult(NamedTuple):
  """Per-sample outcome of :func:`~memjax.laplace.riemannian` (leading axis ``S``).

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
  loss_fn: Callable, theta_map: Array, v: Array, *, args: Any = None, **options
) -> RiemannianResult:
  """Riemannian Laplace samples ``θ_R = γ(t1)`` by solving the geodesic ODE per sample.

  Solves ``γ̈ = − g (γ̇ᵀ H γ̇)/(1 + gᵀg)``, ``γ(0) = θ*``, ``γ̇(0) = v_s`` on
  ``[0, t1]`` with diffrax (``solver`` + ``PIDController(rtol, atol)``,
  ``throw=False``), vmapped over the samples so each has its own adaptive
  steps and its own result code. Failed samples are reported, never replaced
  (see :func:`~memjax.laplace.summarise_failures`).

  Args:
    loss_fn: ``L(θ)``, ``(P,) -> ()``, twice differentiable; or ``L(θ, args)`` when ``args`` is
      given (diffrax-style: ``loss_fn`` is static, ``args`` traced, so new data at the same
      shapes reuses the compiled solve).
    theta_map: ``θ*``, ``(P,)``.
    v: initial velocities, ``(S, P)``.
    args: the loss's data, a pytree (e.g. :class:`memjax.curvature.CurvatureLoss` with
      ``loss_fn = memjax.curvature.Loss(apply_fn)``), or ``None``.
    solver: ``"tsit5"`` | ``"dopri5"`` | ``"dopri8"``.
    rtol, atol: PID controller tolerances.
    t1: end time (1 for the Laplace sample).
    max_steps: diffrax step budget per sample (static).
    dt0: initial step (``None``: chosen by diffrax).
    saveat_ts: optional increasing times in ``[0, t1]``, ``(T,)``, to return a trajectory.
    mesh: optional 1-D device mesh (:func:`memjax.distributed.make_mesh`): the
      samples are split over its devices; results equal the unsharded call.

  Returns:
    :class:`~memjax.laplace.RiemannianResult`.

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
  return solve(as_loss(loss_fn, args), theta_map, v, args, **options)


def solve(
  loss: Callable,
  theta_map: Array,
  v: Array,
  args: Any,
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
  """:func:`~memjax.laplace.riemannian` for a loss already in the two-argument form.

  Args:
    loss: ``L(θ, args)``, hashable (e.g. :class:`memjax.curvature.Loss` or the output of
      :func:`~memjax.laplace.as_loss`), twice differentiable.
    theta_map: ``θ*``, ``(P,)``.
    v: initial velocities, ``(S, P)``.
    args: the loss's data (any pytree, ``None`` included), traced.
    solver, rtol, atol, t1, max_steps, dt0, saveat_ts, mesh: as
      :func:`~memjax.laplace.riemannian`.

  Returns:
    :class:`~memjax.laplace.RiemannianResult`.

  Raises:
    ValueError: as :func:`~memjax.laplace.riemannian`.
  """
  _check_riemannian_args(theta_map, v, solver, rtol, atol, t1, max_steps, saveat_ts)
  dtype = theta_map.dtype
  res = _riemannian(
    loss,
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
    args,
  )
  # A solve that met a non-finite loss is reported as "nonfinite" (diffrax says
  # max_steps_reached): probed only when something failed, so the hot path pays nothing.
  if _checks.is_concrete(res.result) and bool(np.any(np.asarray(res.result) != 0)):
    code = _relabel(loss, res.theta, res.velocity, res.result, jnp.asarray(t1, dtype), args)
    res = res._replace(result=code)
  return res


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _riemannian(loss, solver, max_steps, dt0, mesh, theta_map, v, rtol, atol, t1, saveat_ts, args):
  # One compiled program per (loss, settings, shapes); the loss's data `args` is traced.
  term = diffrax.ODETerm(sampling.stop_on_nonfinite(geodesic_rhs(loss)))
  controller = sampling.pid_controller(rtol, atol, t1)
  if saveat_ts is None:
    saveat = diffrax.SaveAt(t1=True)
  else:
    saveat = diffrax.SaveAt(ts=saveat_ts, t1=True)
  s0_all = jax.vmap(lambda vs: _speed(loss, theta_map, vs, args))(v)

  def solve_one(v_s):
    sol = diffrax.diffeqsolve(
      term,
      _SOLVERS[solver](),
      0.0,
      t1,
      dt0,
      (theta_map, v_s),
      args=args,
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
  s1 = jax.vmap(lambda th, ve: _speed(loss, th, ve, args))(theta, vel)
  diff = jnp.abs(s1 - s0_all)
  drift = jnp.where(s0_all > 0, diff / jnp.where(s0_all > 0, s0_all, 1.0), diff)
  traj = traj_v = None
  if saveat_ts is not None:
    traj, traj_v = thetas[:, :-1], vels[:, :-1]
  return RiemannianResult(
    theta, vel, code, ok, t_final, n_steps, n_acc, n_rej, drift, saveat_ts, traj, traj_v
  )


def _call(loss, theta, args):
  return loss(theta, args)


def _speed(loss, theta, velocity, args):
  g = jax.grad(loss)(theta, args)
  return jnp.sum(velocity**2) + jnp.dot(g, velocity) ** 2


@functools.partial(jax.jit, static_argnums=0)
def _relabel(loss, theta, vel, code, t1, args):
  """Failed samples whose loss gradient is non-finite just ahead of where they stopped."""

  def one(th, ve, c):
    grads = [jax.grad(loss)(th + d * t1 * ve, args) for d in (0.0, *sampling.PROBES_AHEAD)]
    return sampling.relabel_nonfinite(c, (th, ve, *grads))

  return jax.vmap(one)(theta, vel, code)


def summarise_failures(res: RiemannianResult) -> dict:
  """Count samples by diffrax outcome (needs concrete arrays; call outside ``jit``).

  Args:
    res: the output of :func:`~memjax.laplace.riemannian`.

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
