"""Sharded == single-device results (float64), on 8 fake CPU devices in a subprocess; 1-device
path in-process.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import distributed

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("which", ["laplace", "lid", "memorisation"])
def test_sharded_equals_unsharded_on_8_devices(which):
  env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
    [sys.executable, os.path.join(HERE, "_sharded_check.py"), which],
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0 and "ALL OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def _free_port() -> int:
  import socket

  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def test_two_processes_on_localhost_equal_single_process():
  """Two processes × 4 CPU devices joined by jax.distributed.initialize (gloo collectives)."""
  if not hasattr(jax.config, "jax_cpu_collectives_implementation"):
    pytest.skip("this jaxlib has no CPU collectives option (jax_cpu_collectives_implementation)")
  env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
  env.pop("XLA_FLAGS", None)
  port = _free_port()
  script = os.path.join(HERE, "_multiprocess_check.py")
  procs = [
    subprocess.Popen(
      [sys.executable, script, str(port), str(i)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=600)[0])
  finally:
    for p in procs:
      p.kill()
  if any("gloo" in o.lower() and "not" in o.lower() and "support" in o.lower() for o in outs):
    pytest.skip("CPU collectives (gloo) unavailable in this jaxlib: " + outs[0][-500:])
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0 and f"ALL OK {i}" in out, out[-3000:]


def test_single_device_mesh_and_validation():
  mesh = distributed.make_mesh(jax.devices()[:1])
  x = jnp.arange(10.0).reshape(5, 2)
  f = jax.vmap(lambda r: r * 3.0)
  np.testing.assert_array_equal(distributed.map_rows(f, x, mesh=mesh), f(x))
  np.testing.assert_array_equal(distributed.map_rows(f, x, mesh=None), f(x))
  with pytest.raises(ValueError, match="arrays\\[1\\]"):
    distributed.map_rows(lambda a, b: a, x, jnp.ones((4, 2)), mesh=mesh)
  assert distributed.device_summary()["device_count"] >= 1
