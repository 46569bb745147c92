"""Scaffolding shared by every experiment: run dirs, JSON, timing, stats, fitting, the absl main.

Each experiment module exposes ``run(cfg, workdir) -> dict`` (all the computing, saving and
plotting; returns the results that were written to ``results.json``, see :func:`save_results`)
and a one-line ``__main__`` block, :func:`main`. Tests call ``run(get_config("smoke"), tmp_path)``
in-process.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging as py_logging
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from absl import app, flags, logging
from ml_collections import config_flags

from memjax import data as data_lib
from memjax import nets, training

# Library loggers that flood an experiment's output at INFO (orbax's async-save chatter, the
# TPU probe of jax, absl's own), kept at WARNING unless --verbosity asks for more.
_NOISY_LOGGERS = ("orbax", "absl", "jax", "jax._src.xla_bridge", "tensorstore", "etils")

RESULTS = "results.json"  # the file every run writes into its workdir


def make_run_dir(name: str, root: str = "runs", workdir: str | None = None) -> str:
  """``runs/NAME/<UTC timestamp>/`` (or ``workdir`` if given), created."""
  stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S-%f")
  path = workdir or os.path.join(root, name, stamp)
  os.makedirs(path, exist_ok=True)
  return str(path)


def to_jsonable(obj: Any):
  """Nested dicts/lists of numbers from arrays, NamedTuples, ConfigDicts and numpy scalars."""
  if isinstance(obj, dict):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if hasattr(obj, "_asdict"):
    return to_jsonable(obj._asdict())
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if hasattr(obj, "to_dict"):
    return to_jsonable(obj.to_dict())
  if isinstance(obj, (np.ndarray, np.generic)) or type(obj).__module__.startswith("jax"):
    arr = np.asarray(obj)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  return obj


def write_json(path: str, obj: Any) -> str:
  """Write ``obj`` (see :func:`to_jsonable`) as indented JSON; returns ``path``."""
  with open(path, "w") as f:
    json.dump(to_jsonable(obj), f, indent=2, allow_nan=True)
  return path


def save_results(workdir: str, results: dict) -> dict:
  """Write ``results`` to ``<workdir>/results.json``; return them as written (JSON-able)."""
  write_json(os.path.join(workdir, RESULTS), results)
  return to_jsonable(results)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


class Timer:
  """``with Timer() as t: ...`` then ``t.seconds``."""

  def __enter__(self):
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start


def stats(x) -> dict:
  """``{"mean", "median", "std"}`` of an array (plain floats, for results.json)."""
  x = np.asarray(x)
  return {"mean": float(np.mean(x)), "median": float(np.median(x)), "std": float(np.std(x))}


# ---------------------------------------------------------------------------
# Model fitting: the one recipe every experiment uses.


def cosine_adam(lr: float, steps: int, warmup: int = 0, final_fraction: float = 0.05):
  """Adam with a cosine-decayed learning rate (optionally after a linear warm-up)."""
  if warmup:
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps, lr * final_fraction)
  else:
    sched = optax.cosine_decay_schedule(lr, steps, alpha=final_fraction)
  return optax.adam(sched)


def fit(
  loss_fn: Callable,
  params,
  train_cfg,
  key,
  *,
  checkpoint_dir: str | None = None,
  metadata: dict | None = None,
  progress: bool = True,
  chunk_size: int = 500,
  callback=None,
  fingerprint: dict | None = None,
):
  """Minimise ``loss_fn(params, key)`` with :func:`cosine_adam` under :func:`memjax.training.train`.

  ``train_cfg`` holds ``steps``, ``lr`` and optionally ``warmup`` and ``ema_decay``. Returns
  ``(params, losses, result)`` where ``params`` are the EMA parameters when ``ema_decay`` is set.
  ``callback`` (e.g. :class:`memjax.training.HeldoutStopping`) and ``fingerprint`` (the run's
  identity stored with checkpoints; the train config is always part of it) go to ``train``.
  """
  steps = int(train_cfg.steps)
  ema = train_cfg.get("ema_decay", None) or None  # 0 or None: no EMA
  opt = cosine_adam(train_cfg.lr, steps, int(train_cfg.get("warmup", 0) or 0))
  res = training.train(
    loss_fn,
    params,
    opt,
    steps,
    key,
    chunk_size=min(chunk_size, steps),
    ema_decay=ema,
    checkpoint_dir=checkpoint_dir or None,
    progress=progress,
    metadata=metadata,
    callback=callback,
    fingerprint=to_jsonable({"train": _identity_of(train_cfg), **(fingerprint or {})}),
  )
  out = res.state.ema_params if ema is not None else res.state.params
  return out, res.losses, res


def image_data_recipe(dataset: str, train, shape, held_out=None) -> dict:
  """The checkpoint metadata entry that lets ``memjax-audit`` rebuild an image experiment's data.

  ``train`` / ``held_out`` (flattened rows of images of ``shape``) are located in their source
  (``digits``, or ``tfds:NAME:train`` / ``tfds:NAME:test``) and stored as indices with their
  hashes (:func:`memjax.data.recipe`), so the audit needs no copy of the experiment's key splits.
  """
  tfds = dataset != "digits"
  reshape = lambda x: None if x is None else np.asarray(x).reshape((len(x),) + tuple(shape))
  return data_lib.recipe(
    reshape(train),
    f"tfds:{dataset}:train" if tfds else "digits",
    reshape(held_out),
    f"tfds:{dataset}:test" if tfds else "digits",
  )


def _identity_of(train_cfg) -> dict:
  """The train config minus what may change between a run and its continuation."""
  cfg = to_jsonable(train_cfg)
  return {k: v for k, v in cfg.items() if k not in ("steps", "checkpoint_dir", "restore")}


class MLPObjective(NamedTuple):
  """A freshly initialised :class:`memjax.nets.MLPField` and its training objective."""

  apply_fn: Callable  # apply_fn(params, x, t)
  params: Any  # initial parameters
  loss_fn: Callable  # loss_fn(params, key): one minibatch of the objective
  fixed_batch_loss: Callable  # fixed_batch_loss(x, key, num) -> (params -> loss on fixed draws)
  identity: dict  # objective, model, data hash, schedule, parameterisation (for fingerprints)


def mlp_objective(
  data,
  model_cfg,
  batch_size: int,
  key,
  *,
  objective: str = "fm",
  schedule=None,
  parameterisation: str = "velocity",
  t_min: float = 1e-3,
) -> MLPObjective:
  """A :class:`memjax.nets.MLPField` of ``model_cfg`` (``hidden``, ``time_dim``) initialised with
  ``key``, and its objective on ``data`` ``(N, D)`` with minibatches of ``batch_size``.

  ``objective="fm"`` uses :func:`memjax.training.fm_objective` (fixed-batch version
  :func:`memjax.training.heldout_fm_loss`); ``"denoising"`` uses
  :func:`memjax.training.denoising_objective` with ``schedule``, ``parameterisation`` and
  ``t_min`` (:func:`memjax.training.heldout_denoising_loss`).
  """
  d = data.shape[1]
  module = nets.MLPField(dim=d, hidden=tuple(model_cfg.hidden), time_dim=model_cfg.time_dim)
  apply_fn = nets.velocity_fn(module)
  params = nets.init_params(module, key, d, data.dtype)
  if objective == "fm":
    loss_fn = training.fm_objective(apply_fn, data, batch_size)
    fixed = lambda x, k, num: training.heldout_fm_loss(apply_fn, x, k, num)
  elif objective == "denoising":
    loss_fn = training.denoising_objective(
      apply_fn, schedule, data, batch_size, parameterisation, t_min
    )
    fixed = lambda x, k, num: training.heldout_denoising_loss(
      apply_fn, schedule, x, k, num, parameterisation, t_min
    )
  else:
    raise ValueError(f"`objective` must be 'fm' or 'denoising'; got {objective!r}.")
  identity = {
    "objective": objective,
    "model": model_cfg,
    "data": training.data_fingerprint(data),
    "schedule": getattr(schedule, "name", None),
    "parameterisation": parameterisation,
  }
  return MLPObjective(apply_fn, params, loss_fn, fixed, identity)


def fit_mlp(
  data,
  model_cfg,
  train_cfg,
  key,
  *,
  checkpoint_dir=None,
  progress: bool = True,
  **objective,
):
  """Train a :class:`memjax.nets.MLPField` on ``data`` ``(N, D)``.

  ``objective`` (``objective``, ``schedule``, ``parameterisation``, ``t_min``) chooses the loss,
  see :func:`mlp_objective`. ``model_cfg`` holds ``hidden`` and ``time_dim``; ``train_cfg`` holds
  ``steps``, ``lr``, ``batch_size`` and optionally ``ema_decay``. Returns
  ``(apply_fn, params, losses)``.
  """
  k_init, k_train = jax.random.split(key)
  obj = mlp_objective(data, model_cfg, train_cfg.batch_size, k_init, **objective)
  params, losses, _ = fit(
    obj.loss_fn,
    obj.params,
    train_cfg,
    k_train,
    checkpoint_dir=checkpoint_dir,
    progress=progress,
    fingerprint=obj.identity,
  )
  return obj.apply_fn, params, losses


def fit_mlp_cfg(data, cfg, key, **kwargs):
  """:func:`fit_mlp` of the ``cfg.model`` and ``cfg.train`` sections, progress bar per
  ``cfg.progress``; ``kwargs`` go to :func:`fit_mlp`. Returns ``(apply_fn, params, losses)``."""
  return fit_mlp(data, cfg.model, cfg.train, key, progress=cfg.progress, **kwargs)


# ---------------------------------------------------------------------------
# Running an experiment.


def quiet_libraries(level: int = py_logging.WARNING) -> None:
  """Set the loggers of orbax, jax, absl and friends to ``level`` (WARNING by default)."""
  for name in _NOISY_LOGGERS:
    py_logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def x64(enabled: bool):
  """Run a block with ``jax_enable_x64`` set to ``enabled`` and restore the previous value."""
  before = bool(jax.config.jax_enable_x64)
  jax.config.update("jax_enable_x64", bool(enabled))
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", before)


def float32(run: Callable) -> Callable:
  """``run(cfg, workdir)`` in float32 (under ``x64(False)``), so that a run inside an x64 process
  (the test suite, a notebook) gives the CLI numbers."""

  @functools.wraps(run)
  def run_float32(cfg, workdir: str) -> dict:
    with x64(False):
      return run(cfg, workdir)

  return run_float32


def figures_line(workdir: str, figures) -> str:
  """``figure: PATH`` of one figure name; ``figures: PATH, ...`` of those written of several."""
  names = (figures,) if isinstance(figures, str) else tuple(figures)
  paths = [os.path.join(workdir, f) for f in names]
  if len(paths) == 1:
    return f"figure: {paths[0]}"
  return "figures: " + ", ".join(p for p in paths if os.path.exists(p))


def absl_main(
  run: Callable, config_flag, summarise: Callable | str | None = None, figures=()
) -> Callable:
  """A ``main(argv)`` for ``app.run`` that calls ``run(cfg, workdir)`` and prints a summary.

  ``workdir`` is ``--config.workdir`` when set, else ``runs/<name>/<timestamp>``. Library
  loggers stay at WARNING unless ``--verbosity`` is raised (``--verbosity=1`` shows them).
  Printed: the results file, the :func:`figures_line` of ``figures`` (file names in
  ``workdir``; none when empty) and the experiment's own closing lines:
  ``summarise(results, workdir) -> str``, or ``summarise.format_map(results)`` when
  ``summarise`` is a template string.
  """

  def main(argv):
    del argv
    if flags.FLAGS["verbosity"].value < 1:
      quiet_libraries()
    cfg = config_flag.value
    module = run.__module__
    if module == "__main__":  # `python -m experiments.group.name`: the spec has the real name
      import __main__

      module = getattr(getattr(__main__, "__spec__", None), "name", None) or "experiment"
    name = module.rsplit(".", 1)[-1]
    workdir = make_run_dir(name, workdir=cfg.get("workdir") or None)
    results = run(cfg, workdir)
    logging.info("%s finished", name)
    print(f"results: {os.path.join(workdir, RESULTS)}")
    if figures:
      print(figures_line(workdir, figures))
    if isinstance(summarise, str):
      print(summarise.format_map(results))
    elif summarise is not None:
      print(summarise(results, workdir))

  return main


def run_app(
  run: Callable, config_flag, summarise: Callable | str | None = None, figures=()
) -> None:
  """``app.run(absl_main(run, config_flag, summarise, figures))``."""
  app.run(absl_main(run, config_flag, summarise, figures))


def main(
  run: Callable, config_path: str, summarise: Callable | str | None = None, figures=()
) -> None:
  """The ``__main__`` block of an experiment: a ``--config`` flag defaulting to ``config_path``
  (defined here, only when run as a script, so that tests can import several experiment modules
  into one process), then :func:`run_app`.
  """
  run_app(run, config_flags.DEFINE_config_file("config", config_path), summarise, figures)
