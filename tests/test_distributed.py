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


def test_single_device_mesh_and_validation():
  mesh = distributed.make_mesh(jax.devices()[:1])
  x = jnp.arange(10.0).reshape(5, 2)
  f = jax.vmap(lambda r: r * 3.0)
  np.testing.assert_array_equal(distributed.map_rows(f, x, mesh=mesh), f(x))
  np.testing.assert_array_equal(distributed.map_rows(f, x, mesh=None), f(x))
  with pytest.raises(ValueError, match="arrays\\[1\\]"):
    distributed.map_rows(lambda a, b: a, x, jnp.ones((4, 2)), mesh=mesh)
  assert distributed.device_summary()["device_count"] >= 1
