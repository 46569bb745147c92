"""Exact nearest neighbours in memory-bounded chunks: one implementation for every estimator.

For queries ``q`` ``(Q, D)`` and reference points ``r`` ``(N, D)`` the squared distances
``||q||² − 2 q·r + ||r||²`` are formed one ``(query_chunk, ref_chunk)`` block at a time while a
running top-k is carried across reference blocks, so 10k queries against 50k × 3072 images
never materialise the ``Q × N`` matrix. The ``k`` selected distances are then recomputed
exactly as ``||q − r_i||`` and re-sorted (no ``|a|² − 2ab + |b|²`` cancellation for
near-copies). Used by :mod:`memjax.memorisation` (nearest and second-nearest training point)
and :mod:`memjax.lid` (k-NN for local PCA, MLE and TwoNN).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _checks, distributed


class Nearest(NamedTuple):
  """Nearest and second-nearest reference points of each query (leading axis ``Q``).

  Attributes:
    d1: ``(Q,)`` distance ``||q − x⁽¹⁾||`` to the nearest training point.
    d2: ``(Q,)`` distance ``||q − x⁽²⁾||`` to the second-nearest training point.
    i1: ``(Q,)`` index of the nearest training point.
    i2: ``(Q,)`` index of the second-nearest training point.
  """

  d1: jax.Array  # (Q,) distance to the nearest training point
  d2: jax.Array  # (Q,) distance to the second-nearest training point
  i1: jax.Array  # (Q,) index of the nearest training point
  i2: jax.Array  # (Q,) index of the second-nearest training point


@functools.partial(jax.jit, static_argnames=("k", "exclude_self", "query_chunk", "ref_chunk"))
def _knn(queries, ids, ref, k, exclude_self, query_chunk, ref_chunk):
  nq, d = queries.shape
  n_ref = ref.shape[0]
  q_blocks = distributed.pad_rows(queries, query_chunk).reshape(-1, query_chunk, d)
  id_blocks = distributed.pad_rows(ids, query_chunk).reshape(-1, query_chunk)
  r_blocks = distributed.pad_rows(ref, ref_chunk).reshape(-1, ref_chunk, d)
  r_norms = jnp.sum(r_blocks**2, -1)
  offsets = jnp.arange(r_blocks.shape[0], dtype=jnp.int32) * ref_chunk

  def per_query_block(args):
    q, own = args
    qn = jnp.sum(q**2, -1, keepdims=True)

    def merge(carry, blk):
      best_d, best_i = carry
      rb, rn, off = blk
      idx = (off + jnp.arange(ref_chunk)).astype(jnp.int32)
      dist2 = qn - 2.0 * q @ rb.T + rn[None, :]
      bad = idx[None, :] >= n_ref  # padded rows of the last reference block
      if exclude_self:
        bad = bad | (idx[None, :] == own[:, None])
      dist2 = jnp.where(bad, jnp.inf, dist2)
      cand_d = jnp.concatenate([best_d, dist2], 1)
      cand_i = jnp.concatenate([best_i, jnp.broadcast_to(idx[None, :], dist2.shape)], 1)
      neg, pos = jax.lax.top_k(-cand_d, k)
      return (-neg, jnp.take_along_axis(cand_i, pos, 1)), None

    init = (jnp.full((q.shape[0], k), jnp.inf, q.dtype), jnp.zeros((q.shape[0], k), jnp.int32))
    (_, best_i), _ = jax.lax.scan(merge, init, (r_blocks, r_norms, offsets))
    return best_i

  idx = jax.lax.map(per_query_block, (q_blocks, id_blocks)).reshape(-1, k)[:nq]
  # Exact distances of the selected points, re-sorted in case rounding reordered near-ties.
  dist = jnp.sqrt(jnp.sum((queries[:, None, :] - ref[idx]) ** 2, -1))
  order = jnp.argsort(dist, axis=1, stable=True)
  return jnp.take_along_axis(dist, order, 1), jnp.take_along_axis(idx, order, 1)


def _flatten(name, x):
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"`{name}` must have shape (N, ...) with one row per point; got {x.shape}.")
  if x.shape[0] < 1:
    raise ValueError(f"`{name}` must hold at least one point; got shape {x.shape}.")
  return x.reshape(x.shape[0], -1)


def knn(
  queries: jax.Array,
  ref: jax.Array,
  k: int,
  *,
  exclude_self: bool = False,
  query_chunk: int = 256,
  ref_chunk: int = 4096,
  mesh=None,
  names: tuple[str, str] = ("queries", "ref"),
) -> tuple[jax.Array, jax.Array]:
  """Exact ``k`` nearest rows of ``ref`` for each query: ``(dists, idx)``, each ``(Q, k)``.

  Points are flattened (``(Q, ...)`` and ``(N, ...)`` with equal trailing shapes). Sorted by
  distance (ties in index order of discovery). ``exclude_self`` (``queries`` is ``ref``)
  drops each point's own index. Peak memory ``O(query_chunk · (ref_chunk + k))``.

  Args:
    queries: ``(Q, ...)``.
    ref: ``(N, ...)``.
    k: neighbours per query, ``1 ≤ k ≤ N − exclude_self``.
    exclude_self: ``queries`` are the rows of ``ref``; skip each row's own index.
    query_chunk, ref_chunk: block sizes.
    mesh: optional 1-D device mesh (:mod:`memjax.distributed`): queries are split over its
      devices, ``ref`` is replicated.
    names: the caller's argument names for ``queries`` and ``ref`` in error messages.

  Returns:
    ``(dists (Q, k), idx (Q, k) int32)``.

  Raises:
    ValueError: on shape mismatches, non-finite points or an out-of-range ``k``.
  """
  q = _flatten(names[0], _checks.as_float(names[0], queries))
  r = _flatten(names[1], _checks.as_float(names[1], ref))
  if q.shape[1] != r.shape[1]:
    raise ValueError(
      f"`{names[0]}` and `{names[1]}` must have the same point shape; got "
      f"{jnp.shape(queries)[1:]} and {jnp.shape(ref)[1:]}."
    )
  if exclude_self and q.shape != r.shape:
    raise ValueError(
      f"`exclude_self` needs `{names[0]}` to be `{names[1]}`; got shapes {q.shape}, {r.shape}."
    )
  _checks.check_finite(names[0], q)
  _checks.check_finite(names[1], r)
  n_max = r.shape[0] - int(exclude_self)
  if not (isinstance(k, (int, np.integer)) and 1 <= k <= n_max):
    raise ValueError(
      f"`k` must be an int in [1, {n_max}] for {r.shape[0]} reference points; got {k!r}."
    )
  dtype = jnp.result_type(q, r)
  n_local = q.shape[0] if mesh is None else -(-q.shape[0] // mesh.size)
  qc = max(1, min(int(query_chunk), n_local))
  rc = max(k, min(int(ref_chunk), r.shape[0]))
  return _knn_entry(int(k), bool(exclude_self), qc, rc, mesh, q.astype(dtype), r.astype(dtype))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _knn_entry(k, exclude_self, query_chunk, ref_chunk, mesh, q, r):
  ids = jnp.arange(q.shape[0], dtype=jnp.int32)
  fn = functools.partial(
    _knn, ref=r, k=k, exclude_self=exclude_self, query_chunk=query_chunk, ref_chunk=ref_chunk
  )
  return distributed.map_rows(fn, q, ids, mesh=mesh)


def nearest_two(
  queries: jax.Array,
  train: jax.Array,
  *,
  query_chunk: int = 1024,
  train_chunk: int = 4096,
  mesh=None,
  names: tuple[str, str] = ("queries", "train"),
) -> Nearest:
  """Nearest and second-nearest training points of each query, ``(d₁, d₂)`` (Euclidean, flattened).

  :func:`knn` with ``k = 2``; these are the distances of the memorisation criterion
  ``d₁² ≤ c d₂²`` (:mod:`memjax.memorisation`).

  Args:
    queries: ``(Q, ...)``.
    train: ``(N, ...)`` with the trailing shape of ``queries``, ``N ≥ 2``.
    query_chunk: queries per block.
    train_chunk: training points per block.
    mesh: optional 1-D device mesh (:mod:`memjax.distributed`): queries are split over its
      devices, ``train`` is replicated.
    names: the caller's argument names for ``queries`` and ``train`` in error messages.

  Returns:
    :class:`Nearest` of ``(Q,)`` arrays.

  Raises:
    ValueError: if ``train`` has fewer than 2 points, on shape mismatches or non-finite points.
  """
  if jnp.ndim(train) >= 1 and jnp.shape(train)[0] < 2:
    raise ValueError(f"`{names[1]}` must hold at least 2 points; got {jnp.shape(train)[0]}.")
  d, i = knn(
    queries, train, 2, query_chunk=query_chunk, ref_chunk=train_chunk, mesh=mesh, names=names
  )
  return Nearest(d[:, 0], d[:, 1], i[:, 0], i[:, 1])
