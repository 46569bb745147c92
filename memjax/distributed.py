"""Device parallelism for row-independent work: posterior samples, generated samples, LID points.

Everything memjax batches over a leading axis (geodesics per tangent velocity, ODE generation
per noise vector, FLIPD / normal bundle per point, nearest neighbours per query) is independent
row by row. :func:`map_rows` runs such a batched function under ``jax.shard_map`` on a 1-D mesh:
the leading axis is padded to a multiple of the device count (by repeating row 0), split over
the devices with ``NamedSharding(mesh, P(axis))``, processed locally on each device and
un-padded. Closed-over arrays (training data, MAP parameters) are replicated. The same call
works on one device.

Multi-host: call :func:`initialize_multihost` (``jax.distributed.initialize``) at the start of
every process; ``jax.devices()`` then lists the devices of all hosts and :func:`make_mesh` spans
them, so the same code shards across hosts. Inputs must be the same on every host (e.g.
generated from the same key).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "d"


def initialize_multihost(**kwargs) -> None:
  """Start JAX's multi-process runtime: ``jax.distributed.initialize(**kwargs)``.

  Call it first in every process; on TPU pods and SLURM clusters the arguments are detected
  automatically.

  Args:
    **kwargs: passed to ``jax.distributed.initialize`` (``coordinator_address``,
      ``num_processes``, ``process_id``, ...).

  Returns:
    ``None``.
  """
  jax.distributed.initialize(**kwargs)


def make_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = AXIS) -> Mesh:
  """A 1-D mesh named ``axis_name`` over ``devices``.

  Args:
    devices: the devices (default: ``jax.devices()``, all devices of all hosts).
    axis_name: the mesh axis name that rows are split over.

  Returns:
    ``jax.sharding.Mesh`` of shape ``(len(devices),)``.

  Raises:
    ValueError: if ``devices`` is empty.
  """
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("`devices` must not be empty.")
  return Mesh(np.asarray(devices), (axis_name,))


def default_mesh() -> Mesh | None:
  """A mesh over all devices when there is more than one, else ``None``.

  Returns:
    :func:`make_mesh` ``()`` on a multi-device machine, ``None`` (plain single-device execution)
    otherwise.
  """
  return make_mesh() if jax.device_count() > 1 else None


def pad_rows(x: jax.Array, multiple: int) -> jax.Array:
  """Pad the leading axis of ``x`` to a multiple of ``multiple`` by repeating row 0.

  Args:
    x: array with leading axis ``N ≥ 1``.
    multiple: the row count is rounded up to a multiple of this.

  Returns:
    ``x`` with ``⌈N / multiple⌉ · multiple`` rows (``x`` itself when no padding is needed).
  """
  n = x.shape[0]
  pad = (-n) % multiple
  if pad == 0:
    return x
  return jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad,) + x.shape[1:])], axis=0)


def shard_rows(x: jax.Array, mesh: Mesh, axis_name: str = AXIS) -> jax.Array:
  """Pad the leading axis of ``x`` to a multiple of the mesh size and place it row-sharded on it.

  Args:
    x: array with leading axis ``N``.
    mesh: a 1-D mesh (:func:`make_mesh`).
    axis_name: the mesh axis that rows are split over.

  Returns:
    The padded array with sharding ``NamedSharding(mesh, P(axis_name))``.
  """
  return jax.device_put(
    pad_rows(jnp.asarray(x), mesh.shape[axis_name]), NamedSharding(mesh, P(axis_name))
  )


def map_rows(fn: Callable, *arrays: jax.Array, mesh: Mesh | None, axis_name: str = AXIS):
  """``fn(*arrays)`` for a row-independent batched ``fn``, with rows split over the mesh's devices.

  Called eagerly, the sharded program is compiled once per ``(fn, mesh, shapes)`` and reused (pass
  the same ``fn`` object, not a fresh closure, to benefit); inside a trace it is inlined.

  Args:
    fn: maps arrays with a common leading axis ``N`` to a pytree of arrays with leading axis
      ``N``; row ``i`` of the output may depend only on row ``i`` of the inputs (true for vmapped
      per-sample functions).
    *arrays: inputs with equal leading axis ``N`` (uneven ``N`` is handled by padding).
    mesh: a 1-D mesh (:func:`make_mesh`), or ``None`` to just call ``fn``.
    axis_name: the mesh axis that rows are split over.

  Returns:
    ``fn``'s output with leading axis ``N``, equal to the unsharded call.

  Raises:
    ValueError: if no array is given, the leading axes differ, or ``mesh`` has no axis
      ``axis_name``.
  """
  if mesh is None:
    return fn(*arrays)
  if not arrays:
    raise ValueError("`arrays` must hold at least one array to shard.")
  n = arrays[0].shape[0]
  for i, a in enumerate(arrays):
    if a.shape[0] != n:
      raise ValueError(
        f"`arrays[{i}]` must have leading axis {n} like `arrays[0]`; got shape {a.shape}."
      )
  if axis_name not in mesh.shape:
    raise ValueError(f"`mesh` must have an axis named {axis_name!r}; got axes {tuple(mesh.shape)}.")
  sharded = [shard_rows(a, mesh, axis_name) for a in arrays]
  if any(isinstance(a, jax.core.Tracer) for a in sharded):  # inside a trace: no jit of its own
    out = _shard_map(fn, mesh, axis_name, *sharded)
  else:  # eager: one module-level compiled program per (fn, mesh, shapes)
    out = _sharded_call(fn, mesh, axis_name, *sharded)
  return jax.tree.map(lambda o: o[:n], out)


def _shard_map(fn, mesh, axis_name, *arrays):
  spec = P(axis_name)
  return jax.shard_map(
    fn, mesh=mesh, in_specs=(spec,) * len(arrays), out_specs=spec, check_vma=False
  )(*arrays)


_sharded_call = jax.jit(_shard_map, static_argnums=(0, 1, 2))


def device_summary() -> dict:
  """Process and device counts and kinds (for ``results.json`` and benchmarks).

  Returns:
    dict with ``process_count``, ``process_index``, ``device_count``, ``local_device_count``,
    ``device_kind`` and ``platform``.
  """
  return {
    "process_count": jax.process_count(),
    "process_index": jax.process_index(),
    "device_count": jax.device_count(),
    "local_device_count": jax.local_device_count(),
    "device_kind": jax.devices()[0].device_kind,
    "platform": jax.devices()[0].platform,
  }
