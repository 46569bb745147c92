"""Shared by the subprocess checks: pytree equality with a tolerance, printing what passed."""

import jax
import numpy as np


def close(a, b, name, rtol=1e-10):
  """Leaves of ``a`` equal those of ``b``: integers exactly, floats to ``rtol`` (atol 1e-12)."""
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind in "iub":
      np.testing.assert_array_equal(x, y, err_msg=name)
    else:
      np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-12, err_msg=name)
  print("ok", name, flush=True)
