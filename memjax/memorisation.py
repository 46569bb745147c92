"""The memorisation criterion of the papers and the fraction ``M_c`` of memorised samples.

A generated sample ``x̂`` is memorised at threshold ``c`` when (the papers' squared form)

    ||x̂ − x⁽¹⁾||² ≤ c ||x̂ − x⁽²⁾||²,   i.e.  r(x̂) = ||x̂ − x⁽¹⁾||² / ||x̂ − x⁽²⁾||² ≤ c,

with ``x⁽¹⁾, x⁽²⁾`` its nearest and second-nearest training points. This is the default
(``squared=True``) everywhere, and thresholds are the papers' ``c`` (e.g. ``c = 1/3`` is
``||x̂ − x⁽¹⁾|| ≤ 0.577 ||x̂ − x⁽²⁾||``). ``squared=False`` gives the unsquared ratio, whose
``c`` is the square root of the papers'. ``c = 1`` marks every sample and is not in the grid.

Nearest neighbours come from :func:`memjax.neighbours.nearest_two` (chunked, exact distances
for the selected points). Results are keyed by ``c`` (:func:`c_label`), never by position.

References:
  "Reducing Memorisation in Generative Models via Riemannian Bayesian Inference",
  arXiv:2602.00199 (the criterion with squared distances, ``c = 1/3``); Ross et al., "A
  Geometric Framework for Understanding Memorization in Generative Models", arXiv:2411.00113.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, neighbours, sampling

#: The default grid of thresholds ``c`` (``c = 1/3`` is the papers' headline value).
DEFAULT_CS = (0.1, 0.2, 0.25, 1.0 / 3.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def ratio_from_nearest(nn: neighbours.Nearest, squared: bool = True) -> jax.Array:
  """The ratio ``r = d₁/d₂`` (or ``d₁²/d₂²`` with ``squared``) from nearest-neighbour distances.

  Args:
    nn: :class:`memjax.neighbours.Nearest`.
    squared: return the squared ratio (the papers' criterion).

  Returns:
    ``(Q,)`` ratios; ``r = 1`` where ``d₁ = d₂ = 0`` (duplicates).
  """
  d1, d2 = (nn.d1**2, nn.d2**2) if squared else (nn.d1, nn.d2)
  return jnp.where(d2 > 0, d1 / jnp.where(d2 > 0, d2, 1.0), 1.0)


def nn_ratio(samples: jax.Array, train: jax.Array, *, squared: bool = True, **chunks) -> jax.Array:
  """Memorisation ratio ``r = ||x̂ − x⁽¹⁾||² / ||x̂ − x⁽²⁾||²`` of each sample (unsquared on request).

  Repeated training points are counted once (de-duplicated here), so an exact copy of a point
  stored twice gets ``r = 0``, not ``r = 1``.

  Args:
    samples: generated samples ``(Q, ...)`` (integer arrays are promoted to float).
    train: training set ``(N, ...)`` with the same trailing shape, at least 2 distinct points.
    squared: the papers' squared ratio (``False``: ``d₁/d₂``).
    **chunks: ``query_chunk``, ``train_chunk`` and ``mesh`` of
      :func:`memjax.neighbours.nearest_two`.

  Returns:
    ``(Q,)`` ratios in ``[0, 1]``.

  Raises:
    ValueError: on shape mismatches, NaN/inf inputs, or fewer than 2 distinct training points.
  """
  if np.shape(samples)[1:] == np.shape(train)[1:]:
    train = _unique_rows(train)
  nn = neighbours.nearest_two(samples, train, names=("samples", "train"), **chunks)
  return ratio_from_nearest(nn, squared)


def _unique_rows(train):
  """``train`` without repeated points (concrete arrays only; a traced ``train`` is kept).

  A sample that copies a training point present twice would otherwise have ``d1 = d2 = 0`` and
  ``r = 1`` ("not memorised"); the criterion compares distinct training points.
  """
  if not _checks.is_concrete(train) or np.ndim(train) < 2:
    return train
  flat = np.ascontiguousarray(np.asarray(train).reshape(np.shape(train)[0], -1))
  rows = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
  uniq, first = np.unique(rows, return_index=True)  # byte-wise: fast for image sets
  if len(uniq) == len(rows):
    return train
  if len(uniq) < 2:
    raise ValueError(f"`train` must hold at least 2 distinct points; got {len(uniq)}.")
  return jnp.asarray(train)[np.sort(first)]


def c_label(c: float) -> str:
  """The key of threshold ``c`` in result dicts: ``f"{c:.4g}"`` (e.g. ``1/3 -> "0.3333"``).

  Args:
    c: a threshold.

  Returns:
    str.
  """
  return f"{float(c):.4g}"


def check_cs(cs) -> np.ndarray:
  """Validate memorisation thresholds: every ``c`` must lie in ``(0, 1]``.

  Args:
    cs: a sequence of thresholds.

  Returns:
    ``cs`` as a float64 numpy array.

  Raises:
    ValueError: if a threshold lies outside ``(0, 1]`` or ``cs`` is not 1-D.
  """
  cs = np.atleast_1d(np.asarray(cs, np.float64))
  if cs.ndim != 1 or not np.all((cs > 0) & (cs <= 1)):
    raise ValueError(f"`cs` (memorisation thresholds c) must lie in (0, 1]; got {cs.tolist()}.")
  return cs


def memorised_fraction(r: jax.Array, cs: Sequence[float] = DEFAULT_CS) -> jax.Array:
  """``M_c = mean_n 1[r_n ≤ c]`` for each threshold ``c`` in ``cs``.

  Args:
    r: ratios ``(..., Q)`` from :func:`nn_ratio` (the mean is over the last axis).
    cs: thresholds ``c``.

  Returns:
    ``(..., len(cs))`` fractions.

  Raises:
    ValueError: if ``r`` holds NaN/inf or no ratio, or a threshold is outside ``(0, 1]``.
  """
  cs = check_cs(cs)
  _checks.check_finite("r", r)
  r = jnp.asarray(r)
  if r.ndim < 1 or r.shape[-1] == 0:
    raise ValueError(f"`r` must hold at least one ratio (shape (..., Q), Q ≥ 1); got {r.shape}.")
  thresholds = jnp.asarray(cs, r.dtype).reshape((1,) * (r.ndim - 1) + (-1, 1))
  return jnp.mean(r[..., None, :] <= thresholds, axis=-1)


def is_memorised(sample, a, b, c: float, squared: bool = True) -> jax.Array:
  """Pairwise criterion for a two-point training set ``{a, b}``: ``||x − a||² ≤ c ||x − b||²``.

  Args:
    sample: points ``x`` ``(..., D)``.
    a: the candidate nearest training point ``(D,)``.
    b: the other training point ``(D,)``.
    c: threshold.
    squared: the papers' squared form (``False``: ``||x − a|| ≤ c ||x − b||``).

  Returns:
    Boolean array ``(...)``.
  """
  lift = lambda p: jnp.reshape(p, (1,) * (jnp.ndim(sample) - jnp.ndim(p)) + jnp.shape(p))
  da = jnp.linalg.norm(sample - lift(a), axis=-1)
  db = jnp.linalg.norm(sample - lift(b), axis=-1)
  return da**2 <= c * db**2 if squared else da <= c * db


def apollonius_ball(a: jax.Array, b: jax.Array, c: float, squared: bool = True):
  """The memorised set of ``a`` against ``b`` (:func:`is_memorised`) as a ball, for ``0 < c < 1``.

  With the distance ratio ``ρ = √c`` (``squared``) or ``ρ = c``, ``{x : ||x − a|| ≤ ρ ||x − b||}``
  is the ball with centre ``a + ρ²(a − b)/(1 − ρ²)`` and radius ``ρ ||a − b|| / (1 − ρ²)``.

  Args:
    a: training point ``(D,)``.
    b: the other training point ``(D,)``.
    c: threshold in ``(0, 1)``.
    squared: interpret ``c`` as the papers' squared threshold.

  Returns:
    ``(centre (D,), radius ())``.

  Raises:
    ValueError: if ``c`` is outside ``(0, 1)`` (for ``c ≥ 1`` the set is unbounded).
  """
  c = float(check_cs([c])[0])
  if c >= 1:
    raise ValueError(f"`c` must be < 1 for a bounded Apollonius ball; got {c}.")
  c = float(np.sqrt(c)) if squared else c
  centre = a + c**2 * (a - b) / (1 - c**2)
  radius = c * jnp.linalg.norm(a - b) / (1 - c**2)
  return centre, radius


def summary(r: jax.Array, cs: Sequence[float] = DEFAULT_CS, bins: int = 20) -> dict:
  """``M_c`` keyed by :func:`c_label` and a histogram of ``r`` (plain Python, for ``results.json``).

  ``r`` is whatever ratio was passed (squared by default in :func:`nn_ratio`).

  Args:
    r: ratios ``(Q,)``.
    cs: thresholds.
    bins: histogram bins on ``[0, 1]``.

  Returns:
    dict with ``cs``, ``M_c`` (``{c_label(c): M_c}``), ``r_hist``, ``r_bin_edges``, ``r_mean``
    and ``r_median``.
  """
  m = np.asarray(memorised_fraction(r, cs))
  hist, edges = np.histogram(np.asarray(r), bins=bins, range=(0.0, 1.0))
  cs = check_cs(cs)
  return {
    "cs": [float(c) for c in cs],
    "M_c": {c_label(c): float(v) for c, v in zip(cs, m)},
    "r_hist": hist.tolist(),
    "r_bin_edges": edges.tolist(),
    "r_mean": float(np.mean(r)),
    "r_median": float(np.median(r)),
  }


class StackMemorisation(NamedTuple):
  """Generations of a stack of ``S`` models from fixed noise, and their pooled memorisation.

  Attributes:
    result: the raw :class:`memjax.sampling.SampleResult`, fields ``(S, N, ...)``.
    generated: ``(S, N)`` bool: the model was kept and its solve succeeded with a finite endpoint
      (only these samples are scored; the others are reported, never replaced).
    ratios: ``(S, N)`` ratios :func:`nn_ratio` against the training set, ``nan`` where not
      generated.
    pooled: ``(M, D)`` the generated samples, row-major over ``(model, noise)``.
    summary: :func:`summary` of the pooled ratios (``M_c`` keyed by :func:`c_label`).
  """

  result: object
  generated: np.ndarray
  ratios: np.ndarray
  pooled: np.ndarray
  summary: dict


def stack_memorisation(
  apply_fn, params_stack, x0, train, cs: Sequence[float] = DEFAULT_CS, *, keep=None, **settings
) -> StackMemorisation:
  """Generate with every model of a stack (e.g. posterior weight samples) and pool ``M_c``.

  ``M_c = mean_{x̂ pooled} 1[r(x̂) ≤ c]`` over the generations of the kept models whose solve
  succeeded: the one place where "a stack of models → pooled memorisation" is computed.

  Args:
    apply_fn: the field ``u(params, x, t)``.
    params_stack: params pytree whose leaves carry a leading axis ``S``.
    x0: noise ``(N, D)`` (shared by every model) or ``(S, N, D)`` (model ``s`` from ``x0[s]``).
    train: training set ``(N_train, D)``.
    cs: thresholds ``c`` of the summary.
    keep: ``(S,)`` bool, the models to score (default: all); the whole stack is generated so
      that the compiled program is shared across masks.
    **settings: the settings of :func:`memjax.sampling.generate_multi` (``solver``, ``rtol``, ...).

  Returns:
    :class:`StackMemorisation`.

  Raises:
    ValueError: for a ``keep`` that is not ``(S,)``, no generated sample at all, or bad noise or
      settings (:func:`memjax.sampling.generate_multi`).
  """
  res = sampling.generate_multi(apply_fn, params_stack, x0, **settings)
  xs, codes = np.asarray(res.x), np.asarray(res.result)
  s = codes.shape[0]
  keep = np.ones(s, bool) if keep is None else np.asarray(keep, bool)
  if keep.shape != (s,):
    raise ValueError(f"`keep` must have shape (S,) = ({s},); got {keep.shape}.")
  generated = keep[:, None] & (codes == 0) & np.all(np.isfinite(xs), axis=-1)
  if not generated.any():
    raise ValueError("no kept model generated a successful sample; nothing to score.")
  pooled = xs[generated]
  r = np.asarray(nn_ratio(jnp.asarray(pooled), jnp.asarray(train, pooled.dtype)))
  ratios = np.full(codes.shape, np.nan)
  ratios[generated] = r
  return StackMemorisation(res, generated, ratios, pooled, summary(r, cs))
