"""Generation ``x̂ = g_θ(x0)``: solve ``ẋ = u_θ(x, t)`` from the noise end to the data end with diffrax.

Each noise sample is its own ODE (``vmap`` over ``x0``), so every sample keeps
its own adaptive step size and reports its own diffrax result code and step
count; failures are returned, never replaced.
"""
from __future__ import annotations

from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, distributed

SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8,
           "heun": diffrax.Heun, "euler": diffrax.Euler}
ADAPTIVE = ("tsit5", "dopri5", "dopri8", "heun")


class SampleResult(NamedTuple):
  """Generated samples with per-sample solver diagnostics (leading axes as the inputs)."""

  x: jax.Array          # (..., N, D) endpoints x̂ = x(t1)
  result: jax.Array     # (..., N) diffrax result codes (0 = successful)
  num_steps: jax.Array  # (..., N) accepted + rejected steps taken

  @property
  def success(self) -> jax.Array:
    return self.result == 0


def result_code(result) -> jax.Array:
  """Integer code of a diffrax ``RESULTS`` value (0 = successful); works under vmap."""
  return jnp.asarray(result._value)  # diffrax exposes no public accessor for the code


def result_message(code: int) -> str:
  """Human-readable diffrax message for an integer result code."""
  return diffrax.RESULTS._index_to_message[int(code)] or "successful"


def _solver(name: str):
  if name not in SOLVERS:
    raise ValueError(f"`solver` must be one of {sorted(SOLVERS)}; got {name!r}.")
  return SOLVERS[name]()


def solve_flow(apply_fn, params, x0: jax.Array, *, solver: str = "tsit5", t0: float = 0.0, t1: float = 1.0,
               rtol: float = 1e-5, atol: float = 1e-5, num_steps: int = 100, max_steps: int = 4096):
  """Integrate one trajectory ``ẋ = u_θ(x, t)``, ``x(t0) = x0`` (``x0``: ``(D,)``); returns the diffrax solution.

  Adaptive solvers use a PID controller with ``rtol``/``atol``; ``euler`` uses
  ``num_steps`` constant steps. ``throw=False``: inspect ``sol.result``.
  """
  term = diffrax.ODETerm(lambda t, x, p: apply_fn(p, x[None], jnp.full((1,), t, x.dtype))[0])
  if solver in ADAPTIVE:
    controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), None
  else:
    controller, dt0 = diffrax.ConstantStepSize(), (t1 - t0) / num_steps
  return diffrax.diffeqsolve(term, _solver(solver), t0, t1, dt0, x0, args=params,
                             stepsize_controller=controller, max_steps=max_steps, throw=False)


def _generate(apply_fn, params, x0, **kw) -> SampleResult:
  def one(x):
    sol = solve_flow(apply_fn, params, x, **kw)
    return sol.ys[-1], result_code(sol.result), sol.stats["num_steps"]
  x, res, steps = jax.vmap(one)(x0)
  return SampleResult(x, res, steps)


def generate(apply_fn, params, x0: jax.Array, *, solver: str = "tsit5", t0: float = 0.0, t1: float = 1.0,
             rtol: float = 1e-5, atol: float = 1e-5, num_steps: int = 100, max_steps: int = 4096,
             mesh=None) -> SampleResult:
  """Generate ``x̂_n = g_θ(x0_n)`` for a batch of noise ``x0`` of shape ``(N, D)``.

  The default flow-matching convention integrates from ``t0 = 0`` (noise) to
  ``t1 = 1`` (data). Returns :class:`SampleResult` with per-sample result codes.
  With ``mesh`` (:mod:`memjax.distributed`) the noise rows are split over devices.
  """
  _checks.check_ndim("x0", x0, 2, "(N, D)")
  _checks.check_finite("x0", x0)
  _solver(solver)
  kw = dict(solver=solver, t0=t0, t1=t1, rtol=rtol, atol=atol, num_steps=num_steps, max_steps=max_steps)
  return distributed.map_rows(lambda x: _generate(apply_fn, params, x, **kw), x0, mesh=mesh)


def generate_multi(apply_fn, params_stack, x0: jax.Array, **kw) -> SampleResult:
  """Generate with ``S`` parameter sets stacked on a leading axis (e.g. posterior samples).

  ``params_stack`` is a params pytree whose leaves carry a leading axis ``S``;
  ``x0`` is ``(N, D)`` (the same noise for every model, for paired comparisons)
  or ``(S, N, D)``. Returns fields of shape ``(S, N, ...)``.
  """
  _checks.check_ndim("x0", x0, (2, 3), "(N, D) or (S, N, D)")
  _checks.check_finite("x0", x0)
  in_axes = (0, None) if x0.ndim == 2 else (0, 0)
  return jax.vmap(lambda p, x: generate(apply_fn, p, x, **kw), in_axes=in_axes)(params_stack, x0)


def euler_trajectory(field, x0: jax.Array, num_steps: int, t0: float = 0.0, t1: float = 1.0) -> jax.Array:
  """All states of fixed-step Euler for ``ẋ = field(x, t)``: ``x_{k+1} = x_k + h field(x_k, t_k)``, ``h = (t1 − t0)/n``.

  ``field(x (N, D), t (N,))`` (close over parameters); ``x0`` ``(N, D)``. Returns
  ``(num_steps + 1, N, D)`` at ``t_k = t0 + k h`` — the intermediate states that
  sharpness profiles and SAIL need (``generate(solver="euler")`` returns only the end).
  """
  _checks.check_ndim("x0", x0, 2, "(N, D)")
  if num_steps < 1:
    raise ValueError(f"`num_steps` must be >= 1; got {num_steps}.")
  h = (t1 - t0) / num_steps

  def step(x, k):
    x = x + h * field(x, jnp.full(x.shape[:1], t0 + k * h, x.dtype))
    return x, x

  _, xs = jax.lax.scan(step, x0, jnp.arange(num_steps))
  return jnp.concatenate([x0[None], xs])


def summarise(result: SampleResult) -> dict:
  """Counts of solver outcomes and step statistics (plain Python, for results.json)."""
  res = np.asarray(result.result).ravel()
  steps = np.asarray(result.num_steps).ravel()
  return {"num_samples": int(res.size), "num_failed": int(np.sum(res != 0)),
          "failures": {result_message(c): int(np.sum(res == c)) for c in np.unique(res[res != 0])},
          "mean_steps": float(np.mean(steps)), "max_steps": int(np.max(steps))}
