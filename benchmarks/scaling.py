r"""Throughput vs number of devices for sharded geodesics, FLIPD and generation.

Sharding is :mod:`memjax.distributed`. On a CPU each run uses N fake host devices
(``--xla_force_host_platform_device_count``) in a fresh subprocess: it shows correctness and
sharding overhead, not speed-up (the fake devices share the cores).
On a GPU machine pass ``--real`` to use the real devices (1..device_count).

  python benchmarks/scaling.py [--counts=1,2,4,8] [--size=large] [--real]
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time

from absl import app, flags

_COUNTS = flags.DEFINE_list("counts", ["1", "2", "4", "8"], "device counts")
_SIZE = flags.DEFINE_enum("size", "small", ["small", "large"], "problem size")
_REAL = flags.DEFINE_bool("real", False, "use real devices instead of fake CPU devices")
_CHILD = flags.DEFINE_integer("child", 0, "internal: run one measurement with this many devices")

SIZES = {
  "small": dict(hidden=(32, 32), samples=16, points=64, triples=64),
  "large": dict(hidden=(256, 256), samples=64, points=1024, triples=1024),
}


def _timed(fn):
  import jax

  jax.block_until_ready(fn())
  t = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t


def child(n):
  import jax

  from memjax import data, distributed, laplace, lid, nets, paths, sampling

  s = SIZES[_SIZE.value]
  mesh = distributed.make_mesh(jax.devices()[:n])
  key = jax.random.PRNGKey(0)
  module = nets.MLPField(dim=2, hidden=s["hidden"], time_dim=16)
  u = nets.velocity_fn(module)
  params = nets.init_params(module, key, 2)
  train, _ = data.sample_mixture(key, data.ring_mixture(8), 64)
  lfit = laplace.fit(
    u, params, train, key, k=8, alpha=1.0, num_triples=s["triples"], loss_scale=1.0, lanczos_key=key
  )
  v = laplace.sample_velocities(lfit.eig, lfit.alpha, 0.05, key, s["samples"])
  x = jax.random.normal(key, (s["points"], 2))
  field = functools.partial(u, params)
  out = {
    "devices": n,
    "device_kind": jax.devices()[0].device_kind,
    "geodesics_s": _timed(
      lambda: laplace.riemannian(lfit.loss_fn, lfit.theta_map, v, mesh=mesh).theta
    ),
    "flipd_exact_s": _timed(
      lambda: lid.flipd(field, x, 0.9, paths.linear_fm(), parameterisation="velocity", mesh=mesh)
    ),
    "generate_s": _timed(lambda: sampling.generate(u, params, x, mesh=mesh).x),
  }
  print("RESULT " + json.dumps(out))


def main(argv):
  del argv
  if _CHILD.value:
    return child(_CHILD.value)
  rows = []
  for n in map(int, _COUNTS.value):
    env = dict(os.environ)
    if not _REAL.value:
      env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
      env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, __file__, f"--child={n}", f"--size={_SIZE.value}"]
    proc = subprocess.run(
      cmd,
      env=env,
      capture_output=True,
      text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
      print(proc.stderr[-2000:])
      raise SystemExit(f"child with {n} devices failed")
    rows.append(json.loads(line[0][7:]))
  base = rows[0]
  print(
    f"{'devices':>8} {'geodesics s':>12} {'x vs 1':>7} {'FLIPD s':>9} {'x vs 1':>7} "
    f"{'generate s':>11} {'x vs 1':>7}"
  )
  for r in rows:
    print(
      f"{r['devices']:>8} {r['geodesics_s']:>12.3f} "
      f"{base['geodesics_s'] / r['geodesics_s']:>7.2f} "
      f"{r['flipd_exact_s']:>9.3f} {base['flipd_exact_s'] / r['flipd_exact_s']:>7.2f} "
      f"{r['generate_s']:>11.3f} {base['generate_s'] / r['generate_s']:>7.2f}"
    )
  kind = "real" if _REAL.value else "fake CPU devices sharing the cores"
  print(f"device kind: {base['device_kind']} ({kind})")


if __name__ == "__main__":
  app.run(main)
