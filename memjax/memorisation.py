"""Nearest / second-nearest training distances and the memorisation ratio.

A generated sample ``x̂`` is memorised at threshold ``c`` when

    r(x̂) = ||x̂ − x⁽¹⁾|| / ||x̂ − x⁽²⁾|| ≤ c,

with ``x⁽¹⁾, x⁽²⁾`` its nearest and second-nearest training points (the
``squared=True`` form compares squared distances, as in the seed-001 poster).
Distances are computed in memory-bounded chunks: a ``(q_chunk, t_chunk)`` block
at a time, carrying a running top-2, so 10k queries against 50k × 3072 training
images never materialise the full distance matrix. The two selected distances
are then recomputed exactly as ``||x̂ − x_i||`` (no ``|a|² − 2ab + |b|²``
cancellation for near-copies).
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, distributed

DEFAULT_CS = (0.1, 0.2, 0.25, 1.0 / 3.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class Nearest(NamedTuple):
  d1: jax.Array  # (Q,) distance to the nearest training point
  d2: jax.Array  # (Q,) distance to the second-nearest training point
  i1: jax.Array  # (Q,) index of the nearest training point
  i2: jax.Array  # (Q,) index of the second-nearest training point


def _pad_rows(x, multiple):
  n = x.shape[0]
  pad = (-n) % multiple
  return jnp.pad(x, ((0, pad), (0, 0))), n


@functools.partial(jax.jit, static_argnames=("query_chunk", "train_chunk"))
def _nearest_two(queries, train, query_chunk, train_chunk):
  q_pad, nq = _pad_rows(queries, query_chunk)
  t_pad, nt = _pad_rows(train, train_chunk)
  t_blocks = t_pad.reshape(-1, train_chunk, train.shape[1])
  t_norms = jnp.sum(t_blocks**2, -1)
  offsets = jnp.arange(t_blocks.shape[0], dtype=jnp.int32) * train_chunk

  def per_query_chunk(q):
    qn = jnp.sum(q**2, -1, keepdims=True)

    def scan_train(carry, blk):
      best_d, best_i = carry
      tb, tn, off = blk
      d = qn - 2.0 * q @ tb.T + tn[None, :]
      idx = (off + jnp.arange(train_chunk)).astype(jnp.int32)
      d = jnp.where(idx[None, :] < nt, d, jnp.inf)
      cand_d = jnp.concatenate([best_d, d], 1)
      cand_i = jnp.concatenate([best_i, jnp.broadcast_to(idx, d.shape)], 1)
      neg, pos = jax.lax.top_k(-cand_d, 2)
      return (-neg, jnp.take_along_axis(cand_i, pos, 1)), None

    init = (jnp.full((q.shape[0], 2), jnp.inf, q.dtype), jnp.zeros((q.shape[0], 2), jnp.int32))
    (_, best_i), _ = jax.lax.scan(scan_train, init, (t_blocks, t_norms, offsets))
    return best_i

  q_blocks = q_pad.reshape(-1, query_chunk, queries.shape[1])
  idx = jax.lax.map(per_query_chunk, q_blocks).reshape(-1, 2)[:nq]
  # Exact distances for the two selected points, re-ordered in case of rounding ties.
  d = jnp.sqrt(jnp.sum((queries[:, None, :] - train[idx]) ** 2, -1))
  swap = d[:, 1] < d[:, 0]
  d = jnp.where(swap[:, None], d[:, ::-1], d)
  idx = jnp.where(swap[:, None], idx[:, ::-1], idx)
  return Nearest(d[:, 0], d[:, 1], idx[:, 0], idx[:, 1])


def _flatten(name, x):
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"`{name}` must have shape (N, ...) with one row per point; got {x.shape}.")
  if x.shape[0] < 1:
    raise ValueError(f"`{name}` must hold at least one point; got shape {x.shape}.")
  return x.reshape(x.shape[0], -1)


def nearest_two(queries: jax.Array, train: jax.Array, *, query_chunk: int = 1024,
                train_chunk: int = 4096, mesh=None) -> Nearest:
  """Nearest and second-nearest training points of each query (Euclidean, flattened).

  ``queries`` ``(Q, ...)`` and ``train`` ``(N, ...)`` with equal trailing shapes,
  ``N ≥ 2``. Peak memory is ``O(query_chunk · train_chunk + train_chunk · D)``.
  With ``mesh`` (:mod:`memjax.distributed`) the queries are split over its
  devices and the training set is replicated.
  """
  q, t = _flatten("queries", queries), _flatten("train", train)
  if q.shape[1] != t.shape[1]:
    raise ValueError(f"`queries` and `train` must have the same point shape; got {queries.shape[1:]} "
                     f"and {train.shape[1:]}.")
  if t.shape[0] < 2:
    raise ValueError(f"`train` must hold at least 2 points; got {t.shape[0]}.")
  _checks.check_finite("queries", q)
  _checks.check_finite("train", t)
  dtype = jnp.result_type(q, t)
  n_local = q.shape[0] if mesh is None else -(-q.shape[0] // mesh.size)
  qc = max(1, min(query_chunk, n_local))
  tc = max(2, min(train_chunk, t.shape[0]))
  t = t.astype(dtype)
  return distributed.map_rows(lambda qq: _nearest_two(qq, t, qc, tc), q.astype(dtype), mesh=mesh)


def ratio_from_nearest(nn: Nearest, squared: bool = False) -> jax.Array:
  """``r = d1 / d2`` (or ``d1² / d2²`` with ``squared``); ``r = 1`` when ``d1 = d2 = 0`` (duplicates)."""
  d1, d2 = (nn.d1**2, nn.d2**2) if squared else (nn.d1, nn.d2)
  return jnp.where(d2 > 0, d1 / jnp.where(d2 > 0, d2, 1.0), 1.0)


def nn_ratio(samples: jax.Array, train: jax.Array, *, squared: bool = False, **chunks) -> jax.Array:
  """Memorisation ratio ``r(x̂) = ||x̂ − x⁽¹⁾|| / ||x̂ − x⁽²⁾||`` for each sample; shape ``(Q,)``."""
  return ratio_from_nearest(nearest_two(samples, train, **chunks), squared)


def check_cs(cs) -> np.ndarray:
  cs = np.atleast_1d(np.asarray(cs, np.float64))
  if cs.ndim != 1 or not np.all((cs > 0) & (cs <= 1)):
    raise ValueError(f"`cs` (memorisation thresholds c) must lie in (0, 1]; got {cs.tolist()}.")
  return cs


def memorised_fraction(r: jax.Array, cs: Sequence[float] = DEFAULT_CS) -> jax.Array:
  """``M_c = mean_n 1[r_n ≤ c]`` for each threshold ``c`` in ``cs``; shape ``(len(cs),)``.

  ``r`` may carry leading batch axes ``(..., Q)``; the mean is over the last axis.
  """
  cs = check_cs(cs)
  _checks.check_finite("r", r)
  r = jnp.asarray(r)
  thresholds = jnp.asarray(cs, r.dtype).reshape((1,) * (r.ndim - 1) + (-1, 1))
  return jnp.mean(r[..., None, :] <= thresholds, axis=-1)


def is_memorised(sample, a, b, c: float) -> jax.Array:
  """Pairwise criterion ``||x − a|| ≤ c ||x − b||`` for a two-point training set ``{a, b}``."""
  lift = lambda p: jnp.reshape(p, (1,) * (jnp.ndim(sample) - jnp.ndim(p)) + jnp.shape(p))
  return jnp.linalg.norm(sample - lift(a), axis=-1) <= c * jnp.linalg.norm(sample - lift(b), axis=-1)


def apollonius_ball(a: jax.Array, b: jax.Array, c: float):
  """The memorised set of ``a`` against ``b``: ``{x : ||x − a|| ≤ c ||x − b||}``, for ``0 < c < 1``.

  It is the ball with centre ``a + c²(a − b)/(1 − c²)`` and radius ``c ||a − b|| / (1 − c²)``.
  """
  c = float(check_cs([c])[0])
  if c >= 1:
    raise ValueError(f"`c` must be < 1 for a bounded Apollonius ball; got {c}.")
  centre = a + c**2 * (a - b) / (1 - c**2)
  radius = c * jnp.linalg.norm(a - b) / (1 - c**2)
  return centre, radius


def summary(r: jax.Array, cs: Sequence[float] = DEFAULT_CS, bins: int = 20) -> dict:
  """``M_c`` over the grid and a histogram of ``r`` as plain Python (for results.json)."""
  m = np.asarray(memorised_fraction(r, cs))
  hist, edges = np.histogram(np.asarray(r), bins=bins, range=(0.0, 1.0))
  return {"cs": [float(c) for c in check_cs(cs)], "M_c": m.tolist(),
          "r_hist": hist.tolist(), "r_bin_edges": edges.tolist(),
          "r_mean": float(np.mean(r)), "r_median": float(np.median(r))}
