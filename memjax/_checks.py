"""Input validation shared by public entry points.

Shape checks are static and work under ``jit``; finiteness checks need concrete
values and are skipped (not faked) when the argument is a tracer, so every
public function stays jit- and vmap-able.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_finite(name: str, x) -> None:
  """Raise ``ValueError`` if a concrete array ``x`` holds NaN or inf."""
  if x is None or not is_concrete(x):
    return
  if isinstance(x, (int, float)):  # Python scalars: no array round trip
    if not math.isfinite(x):
      raise ValueError(f"`{name}` is {x}; refusing a non-finite value.")
    return
  arr = np.asarray(x)
  if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise ValueError(f"`{name}` contains {bad} non-finite value(s) (NaN or inf); refusing it.")


def check_tree_finite(name: str, tree) -> None:
  for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
    check_finite(f"{name}[leaf {i}]", leaf)


def check_ndim(name: str, x, ndims: Sequence[int] | int, expected: str) -> None:
  ndims = (ndims,) if isinstance(ndims, int) else tuple(ndims)
  if np.ndim(x) not in ndims:
    raise ValueError(f"`{name}` must have shape {expected}; got shape {tuple(np.shape(x))}.")


def check_last_dim(name: str, x, dim: int, expected: str) -> None:
  if np.ndim(x) < 1 or np.shape(x)[-1] != dim:
    raise ValueError(
      f"`{name}` must have shape {expected} with last axis {dim}; got shape {tuple(np.shape(x))}."
    )


def check_positive(name: str, value) -> None:
  if is_concrete(value) and not np.all(np.asarray(value) > 0):
    raise ValueError(f"`{name}` must be > 0; got {value}.")


def check_point_sets(ref_name: str, ref, query_name: str, queries) -> None:
  """``ref`` ``(N, d)`` with ``N ≥ 1`` and ``queries`` ``(Q, d)``, both finite."""
  check_ndim(ref_name, ref, 2, "(N, d)")
  check_ndim(query_name, queries, 2, "(Q, d)")
  if np.shape(ref)[0] < 1:
    raise ValueError(f"`{ref_name}` must hold at least one point.")
  check_last_dim(query_name, queries, np.shape(ref)[1], "(Q, d)")
  check_finite(ref_name, ref)
  check_finite(query_name, queries)


def as_float(name: str, x):
  """``x`` as an array of a floating dtype: integer and bool inputs are promoted to JAX's default
  float (float32, or float64 with ``jax_enable_x64``); complex inputs are refused."""
  arr = x if hasattr(x, "dtype") else np.asarray(x)
  kind = np.dtype(arr.dtype).kind
  if kind == "c":
    raise ValueError(f"`{name}` must be real-valued; got dtype {arr.dtype}.")
  if kind in "iub":
    import jax.numpy as jnp

    return jnp.asarray(arr, jnp.result_type(float))
  return arr


_CONTRACTS: dict = {}


def check_field_output(name: str, fn, args, expected_shape, what: str) -> None:
  """Check once (per callable and input shapes) that ``fn(*args)`` has ``expected_shape``.

  ``args`` are ``(shape, dtype)`` pairs. Uses ``jax.eval_shape`` (no FLOPs); the verdict is
  cached, so a repeated call costs one dictionary look-up.
  """
  key = (id(fn), tuple(args))
  if _CONTRACTS.get(key) is fn:
    return
  structs = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in args]
  try:
    out = jax.eval_shape(fn, *structs)
  except Exception as err:  # noqa: BLE001 - the user's callable failed: say which one
    raise ValueError(f"`{name}` failed when called as {what}: {err}") from err
  shape = tuple(getattr(out, "shape", ()))
  if shape != tuple(expected_shape):
    raise ValueError(
      f"`{name}` must return shape {tuple(expected_shape)} when called as {what}; got {shape}."
    )
  if np.dtype(getattr(out, "dtype", np.float32)).kind != "f":
    raise ValueError(f"`{name}` must return floating values; got dtype {out.dtype}.")
  _CONTRACTS[key] = fn
