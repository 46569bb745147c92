"""Local intrinsic dimension (LID) and the manifold memorisation hypothesis (MMH).

Model-based estimates of ``LIDθ`` from a trained field of any parameterisation
(``eps``, ``score``, ``x0``, ``velocity``) and any :class:`memjax.paths.Schedule`:

* FLIPD (Kamkari et al.): with ``ψ = ψ(t0)``, ``σ = σ(t0)`` and ``y = ψ x`` (the clean
  point rescaled, no noise added),

      FLIPD(x, t0) = D + σ² [tr ∇_y s(y, t0) + ||s(y, t0)||²]
                   = D − σ tr ∇_y ε̂(y, t0) + ||ε̂(y, t0)||²      (ε̂ = −σ s),

  computed in the ε form (no division by a small σ). The trace is exact (``D``
  JVPs in chunks) or Hutchinson's ``(1/m) Σ_j z_jᵀ (∇ε̂) z_j``.
* Normal bundle (Stanczuk et al.): singular values of ``K`` scores at
  ``ψx + σz_i``; the normal dimension is the index of the largest gap.

Data-based ``LID*``: local PCA on ``k`` nearest training points, Levina–Bickel
MLE and TwoNN (chunked exact k-NN from :mod:`memjax.neighbours`). The MMH labels split memorised
samples
into overfitting-driven (``LIDθ < LID*``) and data-driven (``LIDθ ≈ LID*``, small).

Fields are :data:`memjax.paths.BatchField` callables ``field(y (B, D), t (B,))``
(close over parameters, e.g. ``functools.partial(apply_fn, params)``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, distributed, linalg, neighbours, paths

BatchField = paths.BatchField

NOT_MEMORISED, OD_MEM, DD_MEM, OTHER_MEM = 0, 1, 2, 3
MMH_NAMES = ("not_memorised", "od_mem", "dd_mem", "other_mem")


def _check_field_inputs(x, t0, schedule, parameterisation):
  _checks.check_ndim("x", x, 2, "(N, D)")
  _checks.check_finite("x", x)
  _checks.check_ndim("t0", t0, 0, "() (a scalar time)")
  _checks.check_finite("t0", t0)
  if not isinstance(schedule, paths.Schedule):
    raise ValueError(f"`schedule` must be a memjax.paths.Schedule; got {type(schedule).__name__}.")
  if parameterisation not in paths.PARAMETERISATIONS:
    raise ValueError(
      f"`parameterisation` must be one of {paths.PARAMETERISATIONS}; got {parameterisation!r}."
    )
  if _checks.is_concrete(t0):
    lo, hi = sorted((schedule.t_data, schedule.t_noise))
    t = float(t0)
    if not lo <= t <= hi:
      raise ValueError(
        f"`t0` must lie in the time range [{lo}, {hi}] of schedule {schedule.name!r} "
        f"(data at {schedule.t_data}, noise at {schedule.t_noise}); got t0={t}."
      )
    sig = _sigma_at(schedule, t)
    if not sig > 0:
      raise ValueError(
        f"`t0` must give σ(t0) > 0 for schedule {schedule.name!r}; got t0={t0} (σ={sig})."
      )


_SIGMAS: dict = {}


def _sigma_at(schedule, t: float) -> float:
  """``σ(t)`` of ``schedule`` as a float, cached: validation costs no JAX dispatch on repeats."""
  key = (schedule, t)
  if key not in _SIGMAS:
    with jax.ensure_compile_time_eval():  # concrete even inside a caller's jit
      _SIGMAS[key] = float(schedule.sigma(jnp.asarray(t, jnp.result_type(float))))
  return _SIGMAS[key]


@functools.cache
def _default_key():
  with jax.ensure_compile_time_eval():  # concrete even when first made inside a caller's jit
    return jax.random.PRNGKey(0)


def _check_field(field, x):
  """The user's field maps ``(B, D), (B,)`` to ``(B, D)`` floats (checked once, by eval_shape)."""
  n, d = x.shape
  args = (((n, d), x.dtype), ((n,), x.dtype))
  _checks.check_field_output("field", field, args, (n, d), f"field(y ({n}, {d}), t ({n},))")


# ---------------------------------------------------------------------------
# FLIPD.


class Flipd(NamedTuple):
  """FLIPD and its ingredients at ``N`` points.

  Attributes:
    lid: ``D − σ tr ∇ε̂ + ||ε̂||²``, shape ``(N,)``.
    trace: ``tr ∇_y ε̂(y, t0)`` (exact, or Hutchinson's estimate), shape ``(N,)``.
    sq_norm: ``||ε̂(y, t0)||²``, shape ``(N,)``.
    sem: standard error of ``lid`` (``σ`` times the standard error of the trace; 0 when exact,
      ``inf`` with one probe), shape ``(N,)``.
  """

  lid: jax.Array  # D − σ tr∇ε̂ + ||ε̂||²
  trace: jax.Array  # tr ∇_y ε̂(y, t0) (exact or Hutchinson estimate)
  sq_norm: jax.Array  # ||ε̂(y, t0)||²
  sem: jax.Array  # standard error of ``lid`` (σ · sem of the trace; 0 when exact)


def _flipd_point(eps, t0, sig, n_probes, sampler, chunk_size, y, key):
  f = lambda v: eps(v, t0)
  if n_probes is None:
    e, tr = linalg.exact_trace(f, y, chunk_size)
    sem = jnp.zeros((), y.dtype)
  else:
    e, lin = jax.linearize(f, y)
    tr, sem = linalg.hutchinson_trace(
      lin, y.shape[-1], key, n_probes, dtype=y.dtype, sampler=sampler
    )
    sem = jnp.full_like(sem, jnp.inf) if n_probes == 1 else sem  # one probe: no spread to measure
  sq = jnp.sum(e**2)
  return Flipd(y.shape[-1] - sig * tr + sq, tr, sq, sig * sem)


def _batched(point, batch_size):
  """``point`` over the leading axis of its arguments: vmapped, or ``lax.map`` in batches."""
  if batch_size is None:
    return jax.vmap(point)
  return lambda *args: jax.lax.map(lambda a: point(*a), args, batch_size=int(batch_size))


def flipd_details(
  field: BatchField,
  x: jax.Array,
  t0,
  schedule: paths.Schedule,
  *,
  parameterisation: str = "score",
  key: jax.Array | None = None,
  n_probes: int | None = None,
  sampler: str = "normal",
  chunk_size: int = 64,
  batch_size: int | None = None,
  mesh=None,
) -> Flipd:
  """FLIPD at every row of ``x``, ``FLIPD(x, t0) = D − σ tr ∇_y ε̂(y, t0) + ||ε̂(y, t0)||²``.

  Evaluated at ``y = ψ(t0) x`` (the clean point rescaled, no noise added), with
  ``ε̂ = −σ s`` derived from ``field`` via :func:`memjax.paths.convert`; this is
  ``D + σ² [tr ∇_y s + ||s||²]`` written without dividing by a small ``σ``. The trace is
  exact (``D`` JVPs per point, ``chunk_size`` at a time) or Hutchinson's
  ``(1/m) Σ_j z_jᵀ (∇ε̂) z_j`` with ``m = n_probes``. One compiled program per field, schedule,
  settings and shapes is reused across calls.

  Args:
    field: ``field(y (B, D), t (B,)) -> (B, D)`` in ``parameterisation``.
    x: clean points, shape ``(N, D)``.
    t0: scalar time near the data end (small ``σ``); flow matching: close to 1.
    schedule: the :class:`memjax.paths.Schedule` the field was trained on.
    parameterisation: ``'eps'``, ``'score'``, ``'x0'`` or ``'velocity'``.
    key: PRNG key, required with ``n_probes`` (split per point).
    n_probes: ``None`` for the exact trace, else the number ``m ≥ 1`` of Hutchinson probes.
    sampler: Hutchinson probe law, ``'normal'`` or ``'signs'`` (Rademacher).
    chunk_size: JVPs vmapped at once in the exact trace.
    batch_size: points processed at once (``lax.map``); ``None`` vmaps all.
    mesh: optional 1-D device mesh (:mod:`memjax.distributed`); points are split over its
      devices (per-point keys are drawn first, so results match).

  Returns:
    :class:`Flipd` of ``(N,)`` arrays; ``sem`` is ``inf`` for ``n_probes = 1``.

  Raises:
    ValueError: if ``x`` is not ``(N, D)`` and finite, ``t0`` is not a finite scalar in the
      schedule's time range with ``σ(t0) > 0``, ``parameterisation``, ``sampler``,
      ``n_probes``, ``chunk_size`` or ``batch_size`` is invalid, ``key`` is missing with
      ``n_probes``, or ``field`` does not map ``(B, D), (B,)`` to ``(B, D)``.

  References:
    Kamkari et al., "A Geometric View of Data Complexity: Efficient Local Intrinsic Dimension
    Estimation with Diffusion Models", arXiv:2406.03537.
  """
  x = _checks.as_float("x", x)
  settings, key = _flipd_validate(
    x, t0, schedule, parameterisation, key, n_probes, sampler, chunk_size, batch_size
  )
  _check_field(field, x)
  t0 = float(t0) if _checks.is_concrete(t0) else t0  # a Python float: no eager JAX op
  return _flipd_jit(field, schedule, settings, mesh, x, t0, key)


def _flipd_validate(
  x, t0, schedule, parameterisation, key, n_probes, sampler, chunk_size, batch_size
):
  """Check the FLIPD arguments; returns the hashable settings tuple and the key to use."""
  _check_field_inputs(x, t0, schedule, parameterisation)
  if n_probes is not None:
    if not (isinstance(n_probes, (int, np.integer)) and n_probes >= 1):
      raise ValueError(f"`n_probes` must be None (exact) or an int >= 1; got {n_probes!r}.")
    if key is None:
      raise ValueError("`key` is required when `n_probes` is set (Hutchinson probes).")
  if sampler not in ("normal", "signs"):
    raise ValueError(f"`sampler` must be 'normal' or 'signs'; got {sampler!r}.")
  _checks.check_positive("chunk_size", chunk_size)
  if batch_size is not None:
    _checks.check_positive("batch_size", batch_size)
  settings = (
    parameterisation,
    None if n_probes is None else int(n_probes),
    sampler,
    int(chunk_size),
    None if batch_size is None else int(batch_size),
  )
  return settings, key if key is not None else _default_key()


def _flipd_core(field, schedule, settings, mesh, x, t0, key):
  parameterisation, n_probes, sampler, chunk_size, batch_size = settings
  t0 = jnp.asarray(t0, x.dtype)
  psi, sig = schedule.psi(t0), schedule.sigma(t0)
  keys = jax.random.split(key, x.shape[0])
  point = functools.partial(
    _flipd_point,
    paths.point_fn(field, schedule, parameterisation, "eps"),
    t0,
    sig,
    n_probes,
    sampler,
    chunk_size,
  )
  return distributed.map_rows(_batched(point, batch_size), psi * x, keys, mesh=mesh)


# One compiled program per (field, schedule, settings, mesh, shapes); repeated calls reuse it.
_flipd_jit = jax.jit(_flipd_core, static_argnums=(0, 1, 2, 3))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _flipd_curve_jit(field, schedule, settings, mesh, x, t0s, key):
  return jax.lax.map(lambda t: _flipd_core(field, schedule, settings, mesh, x, t, key).lid, t0s)


def flipd(field: BatchField, x: jax.Array, t0, schedule: paths.Schedule, **kwargs) -> jax.Array:
  """FLIPD estimates, ``D − σ tr ∇_y ε̂(ψx, t0) + ||ε̂(ψx, t0)||²`` at every row of ``x``.

  Args:
    field: ``field(y (B, D), t (B,)) -> (B, D)``.
    x: clean points, shape ``(N, D)``.
    t0: scalar time near the data end.
    schedule: the path the field was trained on.
    **kwargs: the keyword arguments of :func:`flipd_details`.

  Returns:
    The estimates, shape ``(N,)``.

  Raises:
    ValueError: as :func:`flipd_details`.

  References:
    Kamkari et al., "A Geometric View of Data Complexity: Efficient Local Intrinsic Dimension
    Estimation with Diffusion Models", arXiv:2406.03537.
  """
  return flipd_details(field, x, t0, schedule, **kwargs).lid


def flipd_curve(
  field: BatchField, x: jax.Array, t0s: jax.Array, schedule: paths.Schedule, **kwargs
) -> jax.Array:
  """FLIPD over a grid of times, one :func:`flipd` per time (sequentially, one program).

  Args:
    field: ``field(y (B, D), t (B,)) -> (B, D)``.
    x: clean points, shape ``(N, D)``.
    t0s: times, shape ``(T,)``; every one must be valid for :func:`flipd_details`.
    schedule: the path the field was trained on.
    **kwargs: ``parameterisation``, ``key``, ``n_probes``, ``sampler``, ``chunk_size``,
      ``batch_size`` and ``mesh`` of :func:`flipd_details` (the same probes at every time).

  Returns:
    FLIPD estimates, shape ``(T, N)``.

  Raises:
    ValueError: if ``t0s`` is not a finite ``(T,)`` array, a time or a keyword is invalid.
  """
  _checks.check_ndim("t0s", t0s, 1, "(T,)")
  _checks.check_finite("t0s", t0s)
  if _checks.is_concrete(t0s):
    for t in np.asarray(t0s):
      _check_field_inputs(x, jnp.asarray(t), schedule, kwargs.get("parameterisation", "score"))
  opts = dict(kwargs)
  mesh = opts.pop("mesh", None)
  names = ("parameterisation", "key", "n_probes", "sampler", "chunk_size", "batch_size")
  unknown = set(opts) - set(names)
  if unknown:
    raise ValueError(f"unknown keyword(s) for flipd_curve: {sorted(unknown)}.")
  defaults = dict(
    parameterisation="score",
    key=None,
    n_probes=None,
    sampler="normal",
    chunk_size=64,
    batch_size=None,
  )
  defaults.update(opts)
  x = _checks.as_float("x", x)
  settings, key = _flipd_validate(x, t0s[0], schedule, **defaults)
  _check_field(field, x)
  return _flipd_curve_jit(field, schedule, settings, mesh, x, jnp.asarray(t0s, x.dtype), key)


def knee_index(
  x: jax.Array, y: jax.Array, curve: str = "concave", direction: str = "decreasing"
) -> jax.Array:
  """Kneedle knee of the curve ``y(x)``: ``argmax_i c·(y_n,i − x̃_i)``.

  ``x`` is normalised along the grid order, ``x_n = (x − x_0)/(x_{T−1} − x_0)``, and ``y`` to
  ``[0, 1]`` by its range; ``x̃ = x_n`` (increasing) or ``1 − x_n`` (decreasing) and ``c = +1``
  (concave) or ``−1`` (convex). For a FLIPD curve over a grid of increasing noise (a plateau at
  the LID, then a drop) use the defaults.

  Args:
    x: grid, shape ``(T,)`` with ``T ≥ 3``.
    y: curve values, shape ``(T,)``.
    curve: ``'concave'`` or ``'convex'``.
    direction: ``'increasing'`` or ``'decreasing'``.

  Returns:
    The index of the knee into ``x`` (an integer array).

  Raises:
    ValueError: if ``x`` and ``y`` are not equal ``(T,)`` shapes with ``T ≥ 3``, or ``curve`` /
      ``direction`` is not one of the names above.

  References:
    Satopää et al., "Finding a 'Kneedle' in a Haystack: Detecting Knee Points in System
    Behavior", ICDCS Workshops 2011.
  """
  _checks.check_ndim("x", x, 1, "(T,)")
  _checks.check_ndim("y", y, 1, "(T,)")
  if x.shape != y.shape or x.shape[0] < 3:
    raise ValueError(
      f"`x` and `y` must have equal shapes (T,) with T >= 3; got {x.shape}, {y.shape}."
    )
  if curve not in ("concave", "convex") or direction not in ("increasing", "decreasing"):
    raise ValueError(
      f"`curve` must be 'concave'/'convex' and `direction` 'increasing'/'decreasing'; "
      f"got {curve!r}, {direction!r}."
    )
  x, y = jnp.asarray(x), jnp.asarray(y)
  xn = (x - x[0]) / (x[-1] - x[0])
  yn = (y - jnp.min(y)) / jnp.maximum(jnp.max(y) - jnp.min(y), jnp.finfo(y.dtype).tiny)
  xt = xn if direction == "increasing" else 1.0 - xn
  sign = 1.0 if curve == "concave" else -1.0
  return jnp.argmax(sign * (yn - xt))


def auto_t0(
  t0s: jax.Array,
  curves: jax.Array,
  schedule: paths.Schedule | None = None,
  curve: str = "convex",
  direction: str = "decreasing",
):
  """The time at the Kneedle knee (:func:`knee_index`) of the mean FLIPD curve.

  With ``schedule`` the knee is found against ``log σ(t0)`` (so VP, VE, EDM and FM grids are
  treated alike), otherwise against ``t0``. The defaults suit learned fields: FLIPD falls from
  ``≈ D`` at tiny noise (unresolved by the model) onto the LID plateau, and the
  convex-decreasing knee is where the plateau starts. For exact scores (plateau first, then a
  drop) use ``curve="concave"``.

  Args:
    t0s: times, shape ``(T,)``, ordered by increasing noise.
    curves: FLIPD curves from :func:`flipd_curve`, shape ``(T, N)``.
    schedule: optional schedule giving ``σ(t0)``.
    curve: ``'concave'`` or ``'convex'``.
    direction: ``'increasing'`` or ``'decreasing'``.

  Returns:
    ``(t0, index)``: the knee time and its index into ``t0s``.

  Raises:
    ValueError: if ``curves`` is not ``(T, N)`` or :func:`knee_index` refuses its inputs.

  References:
    Kamkari et al., "A Geometric View of Data Complexity: Efficient Local Intrinsic Dimension
    Estimation with Diffusion Models", arXiv:2406.03537.
  """
  _checks.check_ndim("curves", curves, 2, "(T, N)")
  t0s = jnp.asarray(t0s)
  x = t0s if schedule is None else jnp.log(schedule.sigma(t0s))
  i = knee_index(x, jnp.mean(curves, axis=1), curve, direction)
  return t0s[i], i


class KneeFlipd(NamedTuple):
  """FLIPD over a grid of times and at the grid's Kneedle knee (:func:`flipd_at_knee`)."""

  t0s: jax.Array  # (T,) the grid, increasing noise
  curves: jax.Array  # (T, N) FLIPD at every grid time
  index: int  # the knee's index into t0s
  t0: float  # the knee time
  lid: jax.Array  # (N,) FLIPD at the knee, curves[index]
  on_edge: bool  # the knee is the first or last grid time (the grid did not bracket it)


def flipd_at_knee(
  field: BatchField,
  x: jax.Array,
  t0s: jax.Array,
  schedule: paths.Schedule,
  *,
  curve: str = "convex",
  direction: str = "decreasing",
  **kwargs,
) -> KneeFlipd:
  """FLIPD curves over ``t0s`` (:func:`flipd_curve`), the knee of their mean (:func:`auto_t0`)
  and FLIPD at that knee, ``FLIPD(x, t0*)`` with ``t0* = t0s[knee(mean_n FLIPD(x_n, ·))]``.

  A knee on the first or last grid time is not a knee the grid found (the plateau may continue
  past the edge); ``on_edge`` says so, and callers should not use it as a detection time.

  Args:
    field: ``field(y (B, D), t (B,)) -> (B, D)``.
    x: clean points, shape ``(N, D)``.
    t0s: times, shape ``(T,)`` with ``T ≥ 3``, ordered by increasing noise.
    schedule: the path the field was trained on (the knee is found against ``log σ(t0)``).
    curve: Kneedle ``'convex'`` (learned fields) or ``'concave'`` (exact scores).
    direction: ``'decreasing'`` or ``'increasing'``.
    **kwargs: the keywords of :func:`flipd_curve`.

  Returns:
    :class:`KneeFlipd`.

  Raises:
    ValueError: as :func:`flipd_curve` and :func:`auto_t0`.

  References:
    Kamkari et al., "A Geometric View of Data Complexity: Efficient Local Intrinsic Dimension
    Estimation with Diffusion Models", arXiv:2406.03537.
  """
  curves = flipd_curve(field, x, t0s, schedule, **kwargs)
  t0, i = auto_t0(t0s, curves, schedule, curve, direction)
  i = int(i)
  return KneeFlipd(
    jnp.asarray(t0s), curves, i, float(t0), curves[i], i in (0, int(np.shape(t0s)[0]) - 1)
  )


# ---------------------------------------------------------------------------
# Normal bundle.


class NormalBundle(NamedTuple):
  """Normal-bundle estimate at ``N`` points.

  Attributes:
    lid: ``D − normal_dim``, shape ``(N,)``.
    normal_dim: ``1 +`` the index of the largest singular-value gap, shape ``(N,)``.
    singular_values: of the ``(K, D)`` score matrix, descending, shape ``(N, min(K, D))``.
  """

  lid: jax.Array  # (N,) D − normal_dim
  normal_dim: jax.Array  # (N,) 1 + index of the largest gap
  singular_values: jax.Array  # (N, min(K, D)) of the (K, D) score matrix, descending


def gap_dimension(singular_values: jax.Array, skip_first_gap: bool = False) -> jax.Array:
  """Normal dimension ``1 + argmax_j (s_j − s_{j+1})`` of descending singular values.

  Args:
    singular_values: descending singular values, shape ``(..., R)``.
    skip_first_gap: ignore the gap ``s_0 − s_1`` (a published variant that guards against one
      dominant direction, e.g. the uncentred mean score).

  Returns:
    Integer normal dimensions, shape ``(...)``.
  """
  gaps = singular_values[..., :-1] - singular_values[..., 1:]
  if skip_first_gap:
    gaps = gaps.at[..., 0].set(-jnp.inf)
  return jnp.argmax(gaps, axis=-1) + 1


def normal_bundle(
  field: BatchField,
  x: jax.Array,
  t0,
  schedule: paths.Schedule,
  key: jax.Array,
  *,
  parameterisation: str = "score",
  num_samples: int | None = None,
  centre: bool = False,
  skip_first_gap: bool = False,
  batch_size: int | None = None,
  mesh=None,
) -> NormalBundle:
  """Normal-bundle LID, ``LID = D − gap_dimension(svd(S))`` of ``S_i = s(ψx + σz_i, t0)``.

  At small ``σ`` the scores near a manifold point span its normal space, so the ``(K, D)``
  matrix of scores at ``K`` noised copies (``z_i ~ N(0, I)``) has ``D − d`` large singular
  values, and the largest gap (:func:`gap_dimension`) counts them. The score is converted
  from ``field`` in any parameterisation (:func:`memjax.paths.convert`).

  Args:
    field: ``field(y (B, D), t (B,)) -> (B, D)`` in ``parameterisation``.
    x: clean points, shape ``(N, D)``.
    t0: scalar time near the data end.
    schedule: the path the field was trained on.
    key: PRNG key of the noise (split per point).
    parameterisation: ``'eps'``, ``'score'``, ``'x0'`` or ``'velocity'``.
    num_samples: ``K ≥ 2``; default ``4D``.
    centre: subtract the mean score before the SVD.
    skip_first_gap: see :func:`gap_dimension`.
    batch_size: points processed at once (``lax.map``); ``None`` vmaps all.
    mesh: optional 1-D device mesh (:mod:`memjax.distributed`) to split the points over.

  Returns:
    :class:`NormalBundle`.

  Raises:
    ValueError: if ``x``, ``t0``, ``schedule``, ``parameterisation``, ``num_samples`` or
      ``batch_size`` is invalid, or ``field`` has the wrong output shape.

  References:
    Stanczuk et al., "Diffusion Models Encode the Intrinsic Dimension of Data Manifolds",
    arXiv:2212.12611.
  """
  x = _checks.as_float("x", x)
  _check_field_inputs(x, jnp.asarray(t0), schedule, parameterisation)
  _check_field(field, x)
  n, d = x.shape
  k = 4 * d if num_samples is None else int(num_samples)
  if k < 2:
    raise ValueError(f"`num_samples` must be >= 2; got {num_samples}.")
  if batch_size is not None:
    _checks.check_positive("batch_size", batch_size)
  settings = (
    parameterisation,
    k,
    bool(centre),
    bool(skip_first_gap),
    None if batch_size is None else int(batch_size),
  )
  return _normal_bundle_jit(field, schedule, settings, mesh, x, jnp.asarray(t0, x.dtype), key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _normal_bundle_jit(field, schedule, settings, mesh, x, t0, key):
  parameterisation, k, centre, skip_first_gap, batch_size = settings
  n, d = x.shape
  psi, sig = schedule.psi(t0), schedule.sigma(t0)

  def point(xi, ki):
    y = psi * xi[None, :] + sig * jax.random.normal(ki, (k, d), x.dtype)
    out = field(y, jnp.full((k,), t0, x.dtype))
    s = paths.convert(schedule, y, t0, out, parameterisation, "score")
    if centre:
      s = s - jnp.mean(s, axis=0, keepdims=True)
    sv = jnp.linalg.svd(s, compute_uv=False)
    nd = gap_dimension(sv, skip_first_gap)
    return NormalBundle(d - nd, nd, sv)

  return distributed.map_rows(_batched(point, batch_size), x, jax.random.split(key, n), mesh=mesh)


# ---------------------------------------------------------------------------
# Data-based LID* (k-NN from memjax.neighbours).


def _pca_count(nb, threshold, explained_variance, atol):
  """LID of one neighbourhood ``nb`` ``(k, D)`` from its covariance eigenvalues ``λ_1 ≥ …``."""
  centred = nb - jnp.mean(nb, axis=0, keepdims=True)
  lam = jnp.linalg.svd(centred, compute_uv=False) ** 2 / nb.shape[0]
  if explained_variance is None:
    return jnp.sum(lam > jnp.maximum(threshold * lam[0], atol))
  frac = jnp.cumsum(lam) / jnp.maximum(jnp.sum(lam), atol)
  return jnp.where(jnp.sum(lam) > atol, 1 + jnp.sum(frac < explained_variance), 0)


@functools.partial(jax.jit, static_argnums=0)
def _pca_counts(settings, train, idx):
  threshold, explained_variance, atol, batch = settings
  count = functools.partial(
    _pca_count, threshold=threshold, explained_variance=explained_variance, atol=atol
  )
  return jax.lax.map(lambda i: count(train[i]), idx, batch_size=batch)


def lpca(
  train: jax.Array,
  k: int = 100,
  *,
  queries: jax.Array | None = None,
  threshold: float = 0.05,
  explained_variance: float | None = None,
  atol: float = 1e-10,
  include_self: bool = True,
  chunk_size: int = 256,
) -> jax.Array:
  """Local-PCA ``LID* = #{i : λ_i > max(threshold·λ_1, atol)}`` of each training point.

  ``λ_1 ≥ … ≥ λ_D`` are the covariance eigenvalues of the point's ``k`` nearest training points
  (itself included, or excluded with ``include_self=False``). With ``explained_variance = v``
  the count is instead ``1 + #{m : Σ_{i≤m} λ_i < v Σ λ}``, the smallest ``m`` whose leading
  eigenvalues explain a fraction ``v`` (0 for a neighbourhood of identical points).
  With ``include_self=False`` and ``atol = 0`` the threshold rule is scikit-dimension's
  ``lPCA(ver="FO", alphaFO=threshold).fit_pw(train, n_neighbors=k)`` and the
  explained-variance rule its ``ver="ratio"`` with ``alphaRatio = v``.

  Args:
    train: points, shape ``(N, D)``.
    k: neighbourhood size.
    queries: optional points ``(Q, D)``; each gets the estimate of its nearest training point.
    threshold: Fukunaga–Olsen fraction of the largest eigenvalue, ``> 0``.
    explained_variance: optional fraction ``v`` in ``(0, 1]`` (replaces ``threshold``).
    atol: absolute eigenvalue floor.
    include_self: whether a training point is one of its own ``k`` neighbours.
    chunk_size: queries per k-NN and PCA block.

  Returns:
    Integer estimates, shape ``(N,)`` (or ``(Q,)`` with ``queries``).

  Raises:
    ValueError: if ``threshold`` is not positive or ``explained_variance`` not in ``(0, 1]``,
      or the k-NN inputs are invalid (``k`` too large, non-finite points).

  References:
    Fukunaga and Olsen, "An Algorithm for Finding Intrinsic Dimensionality of Data", IEEE
    Trans. Computers C-20 (1971).
  """
  _checks.check_positive("threshold", threshold)
  if explained_variance is not None and not 0 < explained_variance <= 1:
    raise ValueError(f"`explained_variance` must be in (0, 1]; got {explained_variance}.")
  _, idx = neighbours.knn(
    train,
    train,
    k,
    exclude_self=not include_self,
    query_chunk=chunk_size,
    names=("train", "train"),
  )
  settings = (float(threshold), explained_variance, float(atol), max(1, min(chunk_size, len(idx))))
  lid_train = _pca_counts(settings, train, idx)
  if queries is None:
    return lid_train
  _, nearest = neighbours.knn(queries, train, 1, query_chunk=chunk_size, names=("queries", "train"))
  return lid_train[nearest[:, 0]]


def mle(
  x: jax.Array,
  k: int = 20,
  *,
  unbiased: bool = False,
  aggregate: str = "harmonic",
  chunk_size: int = 256,
):
  """Levina–Bickel MLE, ``m̂(x_i) = (k − 1) / Σ_{j=1}^{k} log(T_k(x_i) / T_j(x_i))``.

  ``T_j`` is the distance to the ``j``-th nearest neighbour (self excluded); ``unbiased`` uses
  ``k − 2``. The pointwise estimates are scikit-dimension's ``MLE().fit(x, n_neighbors=k)``
  ``dimension_pw_``.

  Args:
    x: points, shape ``(N, D)``.
    k: neighbours, ``≥ 3``.
    unbiased: use ``k − 2`` in the numerator.
    aggregate: ``'harmonic'`` (``1 / mean(1/m̂)``, MacKay–Ghahramani, scikit-dimension's
      ``comb='mle'``), ``'mean'`` (Levina–Bickel's average) or ``'median'``.
    chunk_size: queries per k-NN block.

  Returns:
    ``(global, pointwise)``: a scalar and the estimates of shape ``(N,)``.

  Raises:
    ValueError: if ``aggregate`` is unknown or ``k < 3``.

  References:
    Levina and Bickel, "Maximum Likelihood Estimation of Intrinsic Dimension", NeurIPS 2004.
  """
  if aggregate not in ("harmonic", "mean", "median"):
    raise ValueError(f"`aggregate` must be 'harmonic', 'mean' or 'median'; got {aggregate!r}.")
  if k < 3:
    raise ValueError(f"`k` must be >= 3; got {k}.")
  dists, _ = neighbours.knn(x, x, k, exclude_self=True, query_chunk=chunk_size, names=("x", "x"))
  logs = jnp.sum(jnp.log(dists[:, -1:] / dists), axis=1)
  pw = (k - 2 if unbiased else k - 1) / logs
  agg = {"harmonic": lambda v: 1.0 / jnp.mean(1.0 / v), "mean": jnp.mean, "median": jnp.median}[
    aggregate
  ]
  return agg(pw), pw


def twonn(
  x: jax.Array, *, discard_fraction: float = 0.1, method: str = "linear", chunk_size: int = 256
):
  """TwoNN global ID from the ratios ``μ_i = r_2(x_i) / r_1(x_i)`` of neighbour distances.

  Points with non-finite ``μ`` (duplicates) are dropped; of the ``N`` left, the
  ``n = ⌊N(1 − f)⌋`` smallest ``μ`` are kept, ``F_i = i/N``. ``method='linear'``: the
  least-squares slope through the origin of ``−log(1 − F_i)`` on ``log μ_(i)``; ``'mle'``:
  ``(n − 1) / (Σ_{i≤n} log μ_(i) + (N − n) log μ_(n))`` (Type-II censored). Both are
  scikit-dimension's ``TwoNN(discard_fraction=f, method=method)``.

  Args:
    x: points, shape ``(N, D)``.
    discard_fraction: fraction ``f`` in ``[0, 1)`` of the largest ratios discarded.
    method: ``'linear'`` or ``'mle'``.
    chunk_size: queries per k-NN block.

  Returns:
    The global estimate (a scalar).

  Raises:
    ValueError: if ``method`` is unknown or ``discard_fraction`` is outside ``[0, 1)``.

  References:
    Facco et al., "Estimating the intrinsic dimension of datasets by a minimal neighborhood
    information", Scientific Reports 7 (2017).
  """
  if method not in ("linear", "mle"):
    raise ValueError(f"`method` must be 'linear' or 'mle'; got {method!r}.")
  if not 0 <= discard_fraction < 1:
    raise ValueError(f"`discard_fraction` must be in [0, 1); got {discard_fraction}.")
  dists, _ = neighbours.knn(x, x, 2, exclude_self=True, query_chunk=chunk_size, names=("x", "x"))
  mu = dists[:, 1] / dists[:, 0]
  ok = jnp.isfinite(mu)
  n_valid = jnp.sum(ok)
  log_mu = jnp.log(jnp.sort(jnp.where(ok, mu, jnp.inf)))
  n_keep = jnp.floor(n_valid * (1.0 - discard_fraction)).astype(jnp.int32)
  rank = jnp.arange(mu.shape[0])
  keep = rank < n_keep
  if method == "mle":
    last = log_mu[jnp.maximum(n_keep - 1, 0)]
    return (n_keep - 1) / (jnp.sum(jnp.where(keep, log_mu, 0.0)) + (n_valid - n_keep) * last)
  femp = (rank + 1) / n_valid
  lx = jnp.where(keep, log_mu, 0.0)
  ly = jnp.where(keep, -jnp.log1p(-jnp.where(keep, femp, 0.0)), 0.0)
  return jnp.sum(lx * ly) / jnp.sum(lx * lx)


# ---------------------------------------------------------------------------
# Manifold memorisation hypothesis labels.


def mmh_labels(
  lid_model: jax.Array,
  lid_star: jax.Array,
  memorised: jax.Array,
  *,
  tol: float = 0.5,
  dd_max_lid: float = 0.5,
) -> jax.Array:
  """Manifold-memorisation class of each sample: not memorised, OD-Mem, DD-Mem or other.

  A memorised sample is ``OD_MEM`` (1) when ``LIDθ < LID* − tol`` (the model's manifold is too
  thin there), ``DD_MEM`` (2) when ``|LIDθ − LID*| ≤ tol`` and ``LID* ≤ dd_max_lid`` (the data
  itself is low-dimensional there, e.g. duplicates), otherwise ``OTHER_MEM`` (3); a sample that
  is not memorised is ``NOT_MEMORISED`` (0).

  Args:
    lid_model: model LID ``LIDθ``, shape ``(N,)``.
    lid_star: data LID ``LID*``, shape ``(N,)``.
    memorised: booleans, shape ``(N,)`` (e.g. ``nn_ratio ≤ 1/3``).
    tol: tolerance of the comparisons, in dimensions.
    dd_max_lid: largest ``LID*`` of a data-driven memorised sample.

  Returns:
    Integer labels, shape ``(N,)``.

  Raises:
    ValueError: if the inputs are not ``(N,)`` of one shape or ``lid_model`` is not finite.

  References:
    Ross et al., "A Geometric Framework for Understanding Memorization in Generative Models",
    arXiv:2411.00113.
  """
  for name, arr in (("lid_model", lid_model), ("lid_star", lid_star), ("memorised", memorised)):
    _checks.check_ndim(name, arr, 1, "(N,)")
  if not lid_model.shape == lid_star.shape == memorised.shape:
    raise ValueError(
      f"`lid_model`, `lid_star`, `memorised` must share shape (N,); got "
      f"{lid_model.shape}, {lid_star.shape}, {memorised.shape}."
    )
  _checks.check_finite("lid_model", lid_model)
  od = lid_model < lid_star - tol
  dd = (jnp.abs(lid_model - lid_star) <= tol) & (lid_star <= dd_max_lid)
  mem_class = jnp.where(od, OD_MEM, jnp.where(dd, DD_MEM, OTHER_MEM))
  return jnp.where(jnp.asarray(memorised, bool), mem_class, NOT_MEMORISED)


def mmh_counts(labels: jax.Array) -> dict:
  """Counts per MMH class.

  Args:
    labels: labels from :func:`mmh_labels`.

  Returns:
    ``{name: count}`` for the names of ``MMH_NAMES``, plain ints (for results.json).
  """
  labels = np.asarray(labels)
  return {name: int(np.sum(labels == i)) for i, name in enumerate(MMH_NAMES)}
