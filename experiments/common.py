"""Small helpers shared by the experiment scripts: output folders, JSON, timing."""
from __future__ import annotations

import datetime
import json
import os
import time
from typing import Any

import numpy as np


def make_run_dir(name: str, root: str = "runs", workdir: str | None = None) -> str:
  """``runs/NAME/<UTC timestamp>/`` (or ``workdir`` if given), created."""
  path = workdir or os.path.join(root, name, datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f"))
  os.makedirs(path, exist_ok=True)
  return path


def to_jsonable(obj: Any):
  if isinstance(obj, dict):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if hasattr(obj, "to_dict"):
    return to_jsonable(obj.to_dict())
  if isinstance(obj, (np.ndarray, np.generic)) or type(obj).__module__.startswith("jax"):
    arr = np.asarray(obj)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  return obj


def write_json(path: str, obj: Any) -> str:
  with open(path, "w") as f:
    json.dump(to_jsonable(obj), f, indent=2, allow_nan=True)
  return path


class Timer:
  """``with Timer() as t: ...`` then ``t.seconds``."""

  def __enter__(self):
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start


def fit_fm(data, *, key, hidden, time_dim, steps, batch_size, lr, ema_decay=None, progress=True,
           checkpoint_dir=None, chunk_size=500):
  """Train an :class:`memjax.nets.MLPField` by flow matching on ``data`` ``(N, D)``.

  Adam with a cosine-decayed learning rate; returns ``(apply_fn, params, losses, module)``
  where ``params`` are the EMA parameters when ``ema_decay`` is set.
  """
  import jax
  import optax

  from memjax import nets, training

  k_init, k_train = jax.random.split(key)
  module = nets.MLPField(dim=data.shape[1], hidden=tuple(hidden), time_dim=time_dim)
  apply_fn = nets.velocity_fn(module)
  params = nets.init_params(module, k_init, data.shape[1], data.dtype)
  opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))
  res = training.train(training.fm_objective(apply_fn, data, batch_size), params, opt, steps, k_train,
                       chunk_size=min(chunk_size, steps), ema_decay=ema_decay, checkpoint_dir=checkpoint_dir,
                       progress=progress)
  out = res.state.ema_params if ema_decay is not None else res.state.params
  return apply_fn, out, res.losses, module
