"""One process of a two-process run on localhost: ``python _multiprocess_check.py PORT PROCESS_ID``.

Each process has 4 CPU devices; ``jax.distributed.initialize`` joins them into one 8-device
global mesh (CPU collectives via gloo). Both processes compute the same single-process
reference, run ``laplace.riemannian``, ``lid.flipd`` and ``memorisation.nn_ratio`` over the
global mesh, gather the results and compare. Prints ``ALL OK <process_id>`` on success.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")

from _compare import close  # noqa: E402

from memjax import curvature, distributed, laplace, lid, memorisation, nets, paths


def gather(tree):
  return jax.tree.map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), tree)


def main(port: int, pid: int):
  distributed.initialize_multihost(
    coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid
  )
  assert jax.process_count() == 2 and jax.device_count() == 8, jax.devices()
  assert jax.local_device_count() == 4
  mesh = distributed.make_mesh()  # all 8 devices of both processes
  local = distributed.make_mesh(jax.local_devices()[:1])  # single-device reference
  k = jax.random.split(jax.random.PRNGKey(0), 6)

  # Riemannian Laplace: 11 geodesics (uneven over 8 devices).
  mod = nets.MLPField(dim=2, hidden=(8,), time_dim=4)
  u = nets.velocity_fn(mod)
  params = nets.init_params(mod, k[0], 2, jnp.float64)
  data = jax.random.normal(k[1], (16, 2), jnp.float64)
  triples = curvature.make_triples(k[2], data, 8)
  loss = curvature.curvature_loss(u, params, *triples, alpha=1.0, loss_scale=1.0)
  theta = curvature.param_subset(params).theta
  v = 0.05 * jax.random.normal(k[3], (11, theta.shape[0]), jnp.float64)
  kw = dict(rtol=1e-8, atol=1e-10)
  ref = laplace.riemannian(loss, theta, v, mesh=local, **kw)
  got = laplace.riemannian(loss, theta, v, mesh=mesh, **kw)
  close(
    gather((got.theta, got.result, got.num_steps)),
    (ref.theta, ref.result, ref.num_steps),
    "riemannian",
  )

  # FLIPD on 13 points (exact trace).
  field = lambda y, t: u(params, y, t)
  x = jax.random.normal(k[4], (13, 2), jnp.float64)
  f_ref = lid.flipd(field, x, 0.9, paths.linear_fm(), parameterisation="velocity", mesh=local)
  f_got = lid.flipd(field, x, 0.9, paths.linear_fm(), parameterisation="velocity", mesh=mesh)
  close(gather(f_got), f_ref, "flipd")

  # Memorisation ratio of 13 queries against the replicated training set.
  q = data[:13] + 0.01 * jax.random.normal(k[5], (13, 2), jnp.float64)
  r_ref = memorisation.nn_ratio(q, data, mesh=local)
  r_got = memorisation.nn_ratio(q, data, mesh=mesh)
  close(gather(r_got), r_ref, "nn_ratio")
  print(f"ALL OK {pid}", flush=True)


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]))
