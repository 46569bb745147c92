"""Wall-clock timing shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np


def measure(fn: Callable, *args, repeats: int = 3, stat: Callable = min):
  """``(stat(times), output)`` of ``fn(*args)`` over ``repeats`` timed calls.

  One untimed warm-up (compile) call comes first; its output is the one returned.
  """
  out = jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(stat(times)), out


def median_time(fn: Callable, *args, repeats: int) -> float:
  """Median wall time of ``fn(*args)`` after one warm-up call."""
  return measure(fn, *args, repeats=repeats, stat=np.median)[0]
