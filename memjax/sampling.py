"""Generation ``x̂ = g_θ(x0)``: solve ``ẋ = u_θ(x, t)`` from noise to data with diffrax.

Each noise sample is its own ODE (``vmap`` over ``x0``), so every sample keeps its own adaptive
step size and reports its own diffrax result code and step count; failures are returned, never
replaced. This module is also the one owner of diffrax result codes (:func:`result_code`,
:func:`result_name`, :func:`count_results`) and holds the VE probability-flow sampler
:func:`sample_pf` for denoisers ``D(y, σ)``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, distributed, paths

#: diffrax solvers by name; all but ``"euler"`` are adaptive (:data:`ADAPTIVE`).
SOLVERS = {
  "tsit5": diffrax.Tsit5,
  "dopri5": diffrax.Dopri5,
  "dopri8": diffrax.Dopri8,
  "heun": diffrax.Heun,
  "euler": diffrax.Euler,
}
#: The solvers run with a PID step-size controller.
ADAPTIVE = ("tsit5", "dopri5", "dopri8", "heun")


class SampleResult(NamedTuple):
  """Generated samples with per-sample solver diagnostics (leading axes as the inputs).

  ``success`` is the property ``result == 0``.

  Attributes:
    x: ``(..., N, D)`` endpoints ``x̂ = x(t1)``.
    result: ``(..., N)`` result codes (:func:`result_code`; 0 = successful).
    num_steps: ``(..., N)`` accepted + rejected steps taken.
  """

  x: jax.Array  # (..., N, D) endpoints x̂ = x(t1)
  result: jax.Array  # (..., N) diffrax result codes (0 = successful)
  num_steps: jax.Array  # (..., N) accepted + rejected steps taken

  @property
  def success(self) -> jax.Array:
    return self.result == 0


#: diffrax outcomes memjax names, in code order (0 = successful). Codes are memjax's own, derived
#: with the public ``==`` of diffrax's ``RESULTS`` items, so no diffrax internals are read.
RESULT_NAMES = tuple(
  n
  for n in (
    "successful",
    "max_steps_reached",
    "singular",
    "breakdown",
    "stagnation",
    "conlim",
    "nonfinite_input",
    "nonlinear_max_steps_reached",
    "nonlinear_divergence",
    "nonfinite",
    "dt_min_reached",
    "event_occurred",
    "max_steps_rejected",
    "internal_error",
  )
  if hasattr(diffrax.RESULTS, n)
)


def result_code(result) -> jax.Array:
  """Integer code of a diffrax ``RESULTS`` value (index into :data:`RESULT_NAMES`; 0 = successful).

  Works under ``vmap`` and ``jit``; an outcome memjax does not name maps to ``len(RESULT_NAMES)``.

  Args:
    result: a diffrax ``RESULTS`` value (``sol.result``), possibly batched.

  Returns:
    int32 code(s) of the same batch shape.
  """
  code = jnp.asarray(len(RESULT_NAMES), jnp.int32)
  for i, name in reversed(list(enumerate(RESULT_NAMES))):
    code = jnp.where(result == getattr(diffrax.RESULTS, name), jnp.int32(i), code)
  return code


#: Steps ahead of a failed solve's stopping point, in units of ``t1 − t0``, where the vector
#: field is probed for NaN/inf (:func:`relabel_nonfinite`).
PROBES_AHEAD = (1e-12, 1e-9, 1e-6, 1e-3)


def relabel_nonfinite(code: jax.Array, state) -> jax.Array:
  """``code`` of a failed solve becomes ``"nonfinite"`` when ``state`` holds NaN/inf.

  diffrax reports a solve whose vector field turned non-finite as ``max_steps_reached`` (its
  step-size controller rejects every step into the bad region until the budget is spent). Callers
  pass the final state together with the vector field probed a little ahead of it
  (:data:`PROBES_AHEAD`), which is where the non-finite values are.

  Args:
    code: result code(s) from :func:`result_code`.
    state: a pytree of arrays (final state, vector field values) to test for NaN/inf.

  Returns:
    ``code``, with failed solves whose ``state`` is non-finite set to the ``"nonfinite"`` code.
  """
  finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(state)]))
  nonfinite = jnp.int32(RESULT_NAMES.index("nonfinite"))
  return jnp.where((code != 0) & ~finite, nonfinite, code)


#: Adaptive steps below this fraction of the time span end the solve (``dt_min_reached``).
DT_MIN_FRACTION = 1e-10


def pid_controller(rtol, atol, span) -> diffrax.PIDController:
  """The PID controller of every adaptive memjax solve, stopping at ``dt < DT_MIN_FRACTION · span``.

  A solve whose step size falls below ``DT_MIN_FRACTION · span`` stops with ``dt_min_reached``
  instead of burning ``max_steps``.

  Args:
    rtol: relative tolerance.
    atol: absolute tolerance.
    span: ``|t1 − t0|`` of the solve.

  Returns:
    ``diffrax.PIDController``.
  """
  return diffrax.PIDController(
    rtol=rtol, atol=atol, dtmin=DT_MIN_FRACTION * span, force_dtmin=False
  )


def stop_on_nonfinite(vector_field):
  """Wrap a diffrax vector field so that NaN output becomes ``inf``.

  A NaN error estimate makes diffrax's step-size controller loop on rejected steps until
  ``max_steps``; ``inf`` shrinks the step geometrically until :func:`pid_controller`'s ``dtmin``
  ends the solve after a few dozen rejections. :func:`relabel_nonfinite` then names the outcome.

  Args:
    vector_field: ``f(t, y, args)`` as diffrax calls it.

  Returns:
    The wrapped vector field.
  """

  def field(t, y, args):
    out = vector_field(t, y, args)
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(o)) for o in jax.tree_util.tree_leaves(out)]))
    return jax.tree.map(lambda o: jnp.where(ok, o, jnp.inf), out)

  return field


def result_name(code: int) -> str:
  """Name of a result code from :func:`result_code` (e.g. ``"max_steps_reached"``).

  Args:
    code: an integer code.

  Returns:
    str (``"code_<n>"`` for a code memjax does not name).
  """
  code = int(code)
  return RESULT_NAMES[code] if 0 <= code < len(RESULT_NAMES) else f"code_{code}"


def result_message(code: int) -> str:
  """Human-readable diffrax message for a result code from :func:`result_code`.

  Args:
    code: an integer code.

  Returns:
    str.
  """
  name = result_name(code)
  if not hasattr(diffrax.RESULTS, name):
    return "unknown outcome"
  return diffrax.RESULTS[getattr(diffrax.RESULTS, name)] or "successful"


def count_results(codes) -> dict[str, int]:
  """``{name: count}`` of result codes (concrete arrays; call outside ``jit``).

  Args:
    codes: array of result codes.

  Returns:
    dict from :func:`result_name` to count, for the codes present.
  """
  codes = np.asarray(codes).reshape(-1)
  return {result_name(c): int(np.sum(codes == c)) for c in np.unique(codes)}


def _solver(name: str):
  if name not in SOLVERS:
    raise ValueError(f"`solver` must be one of {sorted(SOLVERS)}; got {name!r}.")
  return SOLVERS[name]()


#: The solver settings every generation function takes as keywords, with their defaults.
SOLVE_DEFAULTS = dict(
  solver="tsit5", t0=0.0, t1=1.0, rtol=1e-5, atol=1e-5, num_steps=100, max_steps=4096
)


def _settings(kwargs: dict, allowed=()) -> dict:
  unknown = set(kwargs) - set(SOLVE_DEFAULTS) - set(allowed)
  if unknown:
    raise ValueError(
      f"unknown keyword(s) {sorted(unknown)}; solver settings are {sorted(SOLVE_DEFAULTS)}."
    )
  return {**SOLVE_DEFAULTS, **kwargs}


def solve_flow(apply_fn, params, x0: jax.Array, **settings):
  """Integrate one trajectory ``ẋ = u_θ(x, t)``, ``x(t0) = x0``; returns the diffrax solution.

  Settings (:data:`SOLVE_DEFAULTS`): ``solver`` (``tsit5``, ``dopri5``, ``dopri8``, ``heun``
  adaptive with a PID controller on ``rtol``/``atol``; ``euler`` with ``num_steps`` constant
  steps), ``t0``, ``t1``, ``max_steps``. The solve uses ``throw=False``: inspect ``sol.result``.

  Args:
    apply_fn: the field ``u(params, x, t)``.
    params: its parameters.
    x0: initial state ``(D,)``.
    **settings: solver settings (see above).

  Returns:
    ``diffrax.Solution`` (final state in ``ys``, outcome in ``result``, counts in ``stats``).

  Raises:
    ValueError: on an unknown setting or solver.
  """
  kw = _settings(settings)
  solver, t0, t1, rtol, atol = kw["solver"], kw["t0"], kw["t1"], kw["rtol"], kw["atol"]
  num_steps, max_steps = kw["num_steps"], kw["max_steps"]
  term = diffrax.ODETerm(
    stop_on_nonfinite(lambda t, x, p: apply_fn(p, x[None], jnp.full((1,), t, x.dtype))[0])
  )
  if solver in ADAPTIVE:
    controller, dt0 = pid_controller(rtol, atol, t1 - t0), None
  else:
    controller, dt0 = diffrax.ConstantStepSize(), (t1 - t0) / num_steps
  return diffrax.diffeqsolve(
    term,
    _solver(solver),
    t0,
    t1,
    dt0,
    x0,
    args=params,
    stepsize_controller=controller,
    max_steps=max_steps,
    throw=False,
  )


def _generate(apply_fn, params, x0, **kw) -> SampleResult:
  def one(x):
    sol = solve_flow(apply_fn, params, x, **kw)
    return sol.ys[-1], result_code(sol.result), sol.stats["num_steps"]

  x, res, steps = jax.vmap(one)(x0)
  return SampleResult(x, res, steps)


def generate(apply_fn, params, x0: jax.Array, *, mesh=None, **settings) -> SampleResult:
  """Generate ``x̂_n = g_θ(x0_n)`` for a batch of noise ``x0``, one adaptive ODE solve per sample.

  The default flow-matching convention integrates from ``t0 = 0`` (noise) to ``t1 = 1`` (data).
  Failed solves whose field turned non-finite are relabelled ``"nonfinite"``
  (:func:`relabel_nonfinite`), never returned as samples silently.

  Args:
    apply_fn: the field ``u(params, x, t)``.
    params: its parameters.
    x0: noise ``(N, D)`` (integer arrays are promoted to float).
    mesh: optional 1-D device mesh (:mod:`memjax.distributed`): the noise rows are split over its
      devices.
    **settings: those of :func:`solve_flow` (:data:`SOLVE_DEFAULTS`).

  Returns:
    :class:`SampleResult` with per-sample result codes and step counts.

  Raises:
    ValueError: if ``x0`` is not ``(N, D)`` or holds NaN/inf, or on an unknown or traced setting.
  """
  kw = _settings(settings)
  x0 = _checks.as_float("x0", x0)
  _checks.check_ndim("x0", x0, 2, "(N, D)")
  _checks.check_finite("x0", x0)
  _solver(kw["solver"])
  static = _static_settings(**kw)
  res = _generate_jit(apply_fn, static, mesh, params, x0)
  if _checks.is_concrete(res.result) and bool(np.any(np.asarray(res.result) != 0)):
    res = res._replace(result=_relabel_jit(apply_fn, static, params, res.x, res.result))
  return res


@functools.partial(jax.jit, static_argnums=(0, 1))
def _relabel_jit(apply_fn, static, params, x, code):
  """Failed solves whose field is non-finite at or just ahead of where they stopped."""
  kw = dict(static)
  h, t_end = kw["t1"] - kw["t0"], kw["t1"]

  def one(xe, c):
    field = lambda y, t: apply_fn(params, y[None], jnp.full((1,), t, y.dtype))[0]
    u = field(xe, jnp.asarray(t_end, xe.dtype))
    ahead = [field(xe + d * h * u, jnp.asarray(t_end, xe.dtype)) for d in PROBES_AHEAD]
    return relabel_nonfinite(c, (xe, u, *ahead))

  return jax.vmap(one)(x, code)


def _static_settings(solver, t0, t1, rtol, atol, num_steps, max_steps):
  """Solver settings as a hashable tuple (the jit cache key), refusing traced values by name."""
  out = [("solver", solver)]
  for name, val in (("t0", t0), ("t1", t1), ("rtol", rtol), ("atol", atol)):
    if not _checks.is_concrete(val):
      raise ValueError(f"`{name}` must be a concrete number (it selects the compiled program).")
    out.append((name, float(val)))
  for name, val in (("num_steps", num_steps), ("max_steps", max_steps)):
    if not (isinstance(val, (int, np.integer)) and val >= 1):
      raise ValueError(f"`{name}` must be a positive int; got {val!r}.")
    out.append((name, int(val)))
  return tuple(out)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _generate_jit(apply_fn, static, mesh, params, x0):
  kw = dict(static)
  return distributed.map_rows(lambda x: _generate(apply_fn, params, x, **kw), x0, mesh=mesh)


def generate_multi(apply_fn, params_stack, x0: jax.Array, **kw) -> SampleResult:
  """Generate with ``S`` parameter sets stacked on a leading axis (e.g. posterior samples).

  Args:
    apply_fn: the field ``u(params, x, t)``.
    params_stack: a params pytree whose leaves carry a leading axis ``S``.
    x0: noise ``(N, D)`` (the same noise for every model, for paired comparisons) or
      ``(S, N, D)``.
    **kw: the settings of :func:`generate` (including ``mesh``).

  Returns:
    :class:`SampleResult` with fields of shape ``(S, N, ...)``.

  Raises:
    ValueError: if ``x0`` is not ``(N, D)`` or ``(S, N, D)``, or holds NaN/inf.
  """
  _checks.check_ndim("x0", x0, (2, 3), "(N, D) or (S, N, D)")
  _checks.check_finite("x0", x0)
  settings = _settings(kw, allowed=("mesh",))
  mesh = settings.pop("mesh", None)
  _solver(settings["solver"])
  static = _static_settings(**settings)
  return _generate_multi_jit(apply_fn, static, mesh, x0.ndim == 3, params_stack, x0)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _generate_multi_jit(apply_fn, static, mesh, per_model_noise, params_stack, x0):
  kw = dict(static)
  in_axes = (0, 0) if per_model_noise else (0, None)
  one = lambda p, x: distributed.map_rows(lambda xx: _generate(apply_fn, p, xx, **kw), x, mesh=mesh)
  return jax.vmap(one, in_axes=in_axes)(params_stack, x0)


def euler_trajectory(
  field, x0: jax.Array, num_steps: int, t0: float = 0.0, t1: float = 1.0
) -> jax.Array:
  """All states of fixed-step Euler for ``ẋ = field(x, t)``: ``x_{k+1} = x_k + h field(x_k, t_k)``.

  ``h = (t1 − t0)/n``, ``t_k = t0 + k h``: the intermediate states that sharpness profiles and
  SAIL need (``generate(solver="euler")`` returns only the end).

  Args:
    field: ``field(x (N, D), t (N,)) -> (N, D)`` (close over parameters).
    x0: initial states ``(N, D)``.
    num_steps: ``n ≥ 1``.
    t0: start time.
    t1: end time.

  Returns:
    ``(num_steps + 1, N, D)`` states.

  Raises:
    ValueError: if ``x0`` is not ``(N, D)`` or ``num_steps < 1``.
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
  """Counts of solver outcomes and step statistics (plain Python, for ``results.json``).

  Args:
    result: a :class:`SampleResult`.

  Returns:
    dict with ``num_samples``, ``num_failed``, ``failures`` (message → count), ``mean_steps`` and
    ``max_steps``.
  """
  res = np.asarray(result.result).ravel()
  steps = np.asarray(result.num_steps).ravel()
  return {
    "num_samples": int(res.size),
    "num_failed": int(np.sum(res != 0)),
    "failures": {result_message(c): int(np.sum(res == c)) for c in np.unique(res[res != 0])},
    "mean_steps": float(np.mean(steps)),
    "max_steps": int(np.max(steps)),
  }


# ---------------------------------------------------------------------------
# Deterministic VE probability-flow sampler (a denoiser D(y, σ) instead of a velocity).


class PFSample(NamedTuple):
  """Output of :func:`sample_pf`: samples and fixed-grid solver diagnostics.

  Attributes:
    x: ``(Q, d)`` final samples ``D(y_K, σ_K)``.
    local_error: ``(Q,)`` max over steps of ``||y_Heun − y_Euler||`` (embedded error estimate).
    num_evals: denoiser evaluations per sample (``2K + 1``).
  """

  x: jax.Array  # (Q, d) final samples D(y_K, σ_K)
  local_error: jax.Array  # (Q,) max over steps of ||y_Heun − y_Euler|| (embedded error estimate)
  num_evals: int  # denoiser evaluations per sample (2K + 1)


def sample_pf(denoiser: paths.Denoiser, z: jax.Array, sigmas) -> PFSample:
  """Integrate the VE probability-flow ODE ``dy/dσ = (y − D(y, σ))/σ`` from ``σ_0`` down to 0.

  Heun's method (second order, EDM-style) on the decreasing grid ``sigmas`` starting from
  ``y_0 = σ_0 z``, then the exact Euler step to ``σ = 0``, which returns ``x = D(y_K, σ_K)``. Pure
  and jit-able (``denoiser`` is closed over); the Heun–Euler difference of each step is reported
  as a local error estimate.

  Args:
    denoiser: a :data:`memjax.paths.Denoiser` ``D(y (Q, d), σ ()) -> (Q, d)``.
    z: standard normal noise ``(Q, d)``.
    sigmas: strictly decreasing noise levels ``(K + 1,)``, all positive
      (e.g. :func:`memjax.regimes.sigma_grid`).

  Returns:
    :class:`PFSample`.

  Raises:
    ValueError: if ``z`` is not ``(Q, d)``, or ``sigmas`` is not a positive, strictly decreasing
      ``(K + 1,)`` grid with ``K ≥ 1``.

  References:
    Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models",
    arXiv:2206.00364.
  """
  z = jnp.asarray(z)
  _checks.check_ndim("z", z, 2, "(Q, d)")
  sigmas = jnp.asarray(sigmas, z.dtype)
  _checks.check_ndim("sigmas", sigmas, 1, "(K + 1,)")
  if sigmas.shape[0] < 2:
    raise ValueError(f"`sigmas` must hold at least 2 levels; got {sigmas.shape[0]}.")
  _checks.check_positive("sigmas", sigmas)
  if _checks.is_concrete(sigmas) and np.any(np.diff(np.asarray(sigmas)) >= 0):
    raise ValueError("`sigmas` must be strictly decreasing (noise → data).")

  def step(carry, pair):
    y, err = carry
    s0, s1 = pair
    d0 = (y - denoiser(y, s0)) / s0
    y_euler = y + (s1 - s0) * d0
    d1 = (y_euler - denoiser(y_euler, s1)) / s1
    y_new = y + (s1 - s0) * 0.5 * (d0 + d1)
    return (y_new, jnp.maximum(err, jnp.linalg.norm(y_new - y_euler, axis=1))), None

  init = (sigmas[0] * z, jnp.zeros(z.shape[:1], z.dtype))
  (y, err), _ = jax.lax.scan(step, init, (sigmas[:-1], sigmas[1:]))
  return PFSample(denoiser(y, sigmas[-1]), err, 2 * (sigmas.shape[0] - 1) + 1)
