"""Run in a subprocess with 8 fake CPU devices: sharded results must equal single-device results."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_enable_x64", True)

from _compare import close  # noqa: E402

from memjax import (
  curvature,
  data,
  distributed,
  laplace,
  lid,
  neighbours,
  nets,
  paths,
  sampling,
)  # noqa: E402


def main(which):
  assert jax.device_count() == 8, jax.devices()
  mesh = distributed.make_mesh()
  key = jax.random.PRNGKey(0)
  module = nets.MLPField(dim=2, hidden=(8, 8), time_dim=8)
  u = nets.velocity_fn(module)
  params = nets.init_params(module, key, 2, jnp.float64)
  train, _ = data.sample_mixture(key, data.ring_mixture(4), 11)
  train = train.astype(jnp.float64)
  x = jax.random.normal(jax.random.PRNGKey(1), (13, 2), jnp.float64)  # 13: uneven over 8 devices
  field = lambda y, t: u(params, y, t)
  if which in ("all", "laplace"):
    subset = curvature.param_subset(params)
    trip = curvature.make_triples(key, train, 16)
    loss = curvature.curvature_loss(u, params, *trip, subset=subset, alpha=1.0, loss_scale=1.0)
    eig = laplace.fit_eigenpairs(loss, subset.theta, 4, key, num_iters=24)  # converged pairs
    v = laplace.sample_velocities(eig, 1.0, 0.05, key, 11)
    close(
      laplace.riemannian(loss, subset.theta, v, mesh=mesh),
      laplace.riemannian(loss, subset.theta, v),
      "riemannian",
    )
  if which in ("all", "lid"):
    fm = paths.linear_fm()
    close(
      lid.flipd(field, x, 0.9, fm, parameterisation="velocity", mesh=mesh),
      lid.flipd(field, x, 0.9, fm, parameterisation="velocity"),
      "flipd exact",
    )
    kw = dict(parameterisation="velocity", key=key, n_probes=3)
    close(
      lid.flipd(field, x, 0.9, fm, mesh=mesh, **kw),
      lid.flipd(field, x, 0.9, fm, **kw),
      "flipd hutchinson",
    )
    close(
      lid.normal_bundle(field, x, 0.9, fm, key, parameterisation="velocity", mesh=mesh),
      lid.normal_bundle(field, x, 0.9, fm, key, parameterisation="velocity"),
      "normal bundle",
    )
  if which in ("all", "memorisation"):
    q = jax.random.normal(jax.random.PRNGKey(2), (37, 2), jnp.float64)
    close(
      neighbours.nearest_two(q, train, mesh=mesh, query_chunk=3, train_chunk=4),
      neighbours.nearest_two(q, train, query_chunk=3, train_chunk=4),
      "nearest_two",
    )
    # Per-device batches change matmul shapes, so rounding differs at the ulp level; an adaptive
    # solve
    # may amplify that up to its tolerance. Tight tolerances make the comparison sharp.
    tol = dict(rtol=1e-12, atol=1e-12)
    close(
      sampling.generate(u, params, x, mesh=mesh, **tol),
      sampling.generate(u, params, x, **tol),
      "generate",
      rtol=1e-9,
    )
  print("ALL OK")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "all")
