"""The ``memjax-audit`` command: absl flags and an ml_collections config, one run directory.

::

  memjax-audit --config.checkpoint=runs/<run>/checkpoints       # a memjax training run
  memjax-audit --config.model.factory=my_pkg.nets:make_unet --config.model.params=params.msgpack \
      --config.data.source=train_images/                        # any Flax model and its data
  memjax-audit --config.model.diffusers=ddpm-cifar10-32 --config.data.source=tfds:cifar10
  memjax-audit --config=memjax/audit/configs.py:toy          # the known-answer toy, end to end
  python -m memjax.audit --config=memjax/audit/configs.py:smoke --config.workdir=/tmp/audit

Writes ``report.html`` (one self-contained page), ``samples.csv`` and ``summary.json`` into
``--config.workdir`` (default ``runs/audit/<UTC timestamp>``). :func:`audit` is the same run
in-process (``audit(get_config("smoke"), workdir)``).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import logging as py_logging
import os
import textwrap

import jax
import numpy as np

from memjax import paths
from memjax.audit import lenses, model, report, sources, toy

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs.py")
_NOISY_LOGGERS = ("orbax", "absl", "jax", "jax._src.xla_bridge", "tensorstore", "etils")


@contextlib.contextmanager
def _x64(enabled: bool):
  before = bool(jax.config.jax_enable_x64)
  jax.config.update("jax_enable_x64", bool(enabled))
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", before)


def load_config_file(spec: str):
  """``get_config(variant)`` of a config file given as ``PATH[:VARIANT]``.

  A config file that imports the repository's ``experiments`` package needs the repository on
  ``PYTHONPATH`` (or the command run as ``python -m memjax.audit`` from its root).
  """
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"`experiment_config` {path!r} is not a file.")
  mod_spec = importlib.util.spec_from_file_location("_audit_experiment_config", path)
  module = importlib.util.module_from_spec(mod_spec)
  try:
    mod_spec.loader.exec_module(module)
  except ModuleNotFoundError as err:
    raise ValueError(
      f"`experiment_config` {path!r} imports {err.name!r}, which is not importable: put the "
      "folder that holds it on PYTHONPATH (for the repository's experiment configs: "
      "PYTHONPATH=<repository root>)."
    ) from err
  return module.get_config(variant or None)


def schedule_of(model_cfg) -> paths.Schedule:
  """The :class:`memjax.paths.Schedule` of ``model.schedule`` and ``model.schedule_kwargs``."""
  kwargs = {}
  if model_cfg.schedule_kwargs:
    try:
      kwargs = json.loads(model_cfg.schedule_kwargs)
    except json.JSONDecodeError as err:
      raise ValueError(
        f"`model.schedule_kwargs` must be JSON (e.g. '{{\"beta_max\": 20.0}}'); got "
        f"{model_cfg.schedule_kwargs!r}."
      ) from err
  if model_cfg.schedule not in paths.SCHEDULES:
    raise ValueError(
      f"`model.schedule` must be one of {sorted(paths.SCHEDULES)}; got {model_cfg.schedule!r}."
    )
  try:
    return paths.get_schedule(model_cfg.schedule, **kwargs)
  except TypeError as err:
    raise ValueError(
      f"`model.schedule_kwargs` {kwargs} do not fit {model_cfg.schedule!r}: {err}"
    ) from err


def _validate(cfg) -> None:
  """The config's model and data settings, checked once before anything is loaded."""
  mc = cfg.model
  if mc.parameterisation not in model.PARAMETERISATIONS:
    raise ValueError(
      f"`model.parameterisation` must be one of {model.PARAMETERISATIONS}; got "
      f"{mc.parameterisation!r}."
    )
  schedule_of(mc)
  if mc.factory and mc.diffusers:
    raise ValueError("pass one of `model.factory` and `model.diffusers`, not both.")
  byo = bool(mc.factory or mc.diffusers)
  if byo and cfg.checkpoint:
    raise ValueError(
      "pass either `checkpoint` (a memjax training run) or `model.factory`/`model.diffusers` "
      "(any network), not both; a memjax checkpoint_dir can be `model.params`."
    )
  if mc.params and not mc.factory:
    raise ValueError("`model.params` needs `model.factory` (the network they belong to).")
  if byo and not cfg.data.source:
    raise ValueError(
      "`data.source` is required with `model.factory`/`model.diffusers`: the training data "
      "(.npy/.npz file, image folder, tfds:NAME[:SPLIT], digits or MODULE:FUNCTION)."
    )
  for name, path in (("model.params", mc.params), ("model.diffusers", mc.diffusers)):
    if path and not os.path.exists(path):
      raise ValueError(f"`{name}` {path!r} does not exist.")
  if not (byo or cfg.checkpoint or cfg.experiment == "audit.toy"):
    raise ValueError(
      "nothing to audit: pass --config.checkpoint=runs/<run>/checkpoints (a memjax run), or "
      "--config.model.factory=MODULE:FUNCTION --config.model.params=FILE "
      "--config.data.source=DATA (any Flax model), or --config.model.diffusers=FOLDER."
    )


def _stored_data_hash(meta: dict):
  fp = meta.get("fingerprint", {}) or {}
  for entry in (fp.get("data"), (fp.get("extra") or {}).get("data")):
    if isinstance(entry, dict) and "sha256" in entry:
      return entry["sha256"]
  return None


def build(cfg, workdir: str):
  """``(Model, Data)`` of the config: the model (the toy trained first) and its training data."""
  _validate(cfg)
  mc = cfg.model
  checkpoint = cfg.checkpoint
  step = None if cfg.step < 0 else int(cfg.step)
  exp_cfg = None
  if cfg.experiment_config:
    exp_cfg = load_config_file(cfg.experiment_config).to_dict()
  if cfg.experiment == "audit.toy" and not checkpoint and not (mc.factory or mc.diffusers):
    exp_cfg = exp_cfg or cfg.toy.to_dict()
    checkpoint = os.path.join(workdir, "checkpoints")
    toy_data = toy.make_data(exp_cfg["data"])
    key = jax.random.PRNGKey(int(exp_cfg["seed"]))
    toy.train(exp_cfg, toy_data.train, key, checkpoint, cfg.progress, toy_data.held_out)
  meta = model.read_checkpoint(checkpoint, step).metadata if checkpoint else {}
  data = sources.load(cfg.data, meta.get("data"), f"checkpoint {checkpoint!r}")
  stored = _stored_data_hash(meta)
  if stored and stored != data.info["data_sha256"]:
    raise ValueError(
      f"the training data ({data.info['data_source']}) differs from the data hashed in "
      f"checkpoint {checkpoint!r}: pass the data that trained it."
    )
  shape = data.data_shape
  if tuple(mc.data_shape):
    shape = tuple(int(s) for s in mc.data_shape)
    if int(np.prod(shape)) != int(np.prod(data.data_shape)):
      raise ValueError(
        f"`model.data_shape` {shape} does not match the training points of shape "
        f"{data.data_shape} ({data.info['data_source']})."
      )
  info = dict(data.info, experiment=cfg.experiment)
  if mc.diffusers:
    m = model.from_diffusers(mc.diffusers, data_shape=shape, info=info)
  elif mc.factory:
    m = model.from_factory(
      mc.factory,
      mc.params,
      data_shape=shape,
      schedule=schedule_of(mc),
      parameterisation=mc.parameterisation,
      info=info,
    )
  else:
    if exp_cfg is None:
      exp_cfg = meta.get("config")
    if exp_cfg is None:
      raise ValueError(
        f"checkpoint {checkpoint!r} stores no config: pass --config.experiment_config=PATH."
      )
    exp_cfg = exp_cfg.to_dict() if hasattr(exp_cfg, "to_dict") else exp_cfg
    if len(shape) == 1 and "widths" in exp_cfg.get("model", {}):
      shape = None  # flat rows of an image UNet's data (an older recipe): shape from the config
    m = model.from_checkpoint(
      checkpoint,
      exp_cfg,
      step=step,
      use_ema=bool(cfg.use_ema),
      data_shape=shape,
      schedule=schedule_of(mc),
      parameterisation=mc.parameterisation,
    )
    m.info.update(info)
  return m, data


def audit(cfg, workdir: str) -> dict:
  """Build the model of ``cfg``, run every lens, write the report files; returns the summary
  (with ``files``: the paths written). A run that fails leaves no empty directories behind."""
  made = _missing_dirs(workdir)
  os.makedirs(workdir, exist_ok=True)
  try:
    with _x64(cfg.x64):
      m, data = build(cfg, workdir)
      rep = lenses.run(
        m,
        data.train,
        jax.random.PRNGKey(int(cfg.seed)),
        cfg,
        held_out=data.held_out,
        mesh=cfg.mesh,
        progress=bool(cfg.progress),
      )
      files = report.write(rep, workdir, cfg)
  except BaseException:
    for d in made:  # innermost first; a directory that holds anything is kept
      with contextlib.suppress(OSError):
        os.rmdir(d)
    raise
  return dict(rep.summary, files=files)


def _missing_dirs(path: str) -> list[str]:
  """The directories ``os.makedirs(path)`` would create, innermost first."""
  out, path = [], os.path.abspath(path)
  while path and not os.path.exists(path):
    out.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return out


def resolve_config_spec(spec: str) -> str:
  """``--config`` as a file path: ``PATH[:VARIANT]`` as given, ``MODULE[:VARIANT]`` (an importable
  config module, e.g. ``memjax.audit.configs:toy``) or ``:VARIANT`` (the audit's own config) from
  any working directory.

  Raises:
    ValueError: if ``spec`` names neither a file nor an importable module.
  """
  path, sep, variant = spec.rpartition(":") if ":" in spec else (spec, "", "")
  if not path:
    return CONFIG + sep + variant
  if os.path.isfile(path):
    return spec
  if path.endswith(".py"):
    raise ValueError(f"`config` file {path!r} does not exist (working directory {os.getcwd()!r}).")
  try:
    found = importlib.util.find_spec(path)
  except (ImportError, ValueError):
    found = None
  if found is None or not found.origin or not os.path.isfile(found.origin):
    raise ValueError(
      f"`config` {spec!r} names neither a config file nor an importable module; use "
      "PATH.py[:VARIANT], MODULE[:VARIANT] (e.g. memjax.audit.configs:toy) or :VARIANT."
    )
  return found.origin + sep + variant


def _workdir(cfg) -> str:
  if cfg.workdir:
    return cfg.workdir
  stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S-%f")
  return os.path.join("runs", "audit", stamp)


def summary_lines(summary: dict) -> str:
  """The closing lines of the CLI: M_c, detection per detector, MMH counts, the danger zone."""
  lines = [f"report: {summary['files']['html']}"]
  lines += [f"WARNING: {w}" for w in summary.get("warnings", [])]
  if summary.get("verdict"):
    lines += textwrap.wrap("verdict: " + summary["verdict"], 100)
  lines.append(
    f"memorised {summary['num_memorised']}/{summary['num_scored']} (c = {summary['c']:.3g})"
  )
  for key, title in (
    ("detection", "generated memorised vs generated non-memorised samples"),
    ("detection_per_prompt", "per prompt (conditional model)"),
    ("membership_baseline", "membership baseline: training vs held-out points (NOT detection)"),
  ):
    rows = report.detection_table_rows(summary, key) if summary.get(key) else []
    if rows:
      lines.append(f"{title}:")
    for name, _, direction, auroc, ci, tpr, _, _, status in rows:
      lines.append(
        f"  {name:24s} {direction:28s} AUROC {auroc} {ci}  TPR@{summary['fpr'] * 100:g}%FPR "
        f"{tpr}  {status}"
      )
  if "mmh_counts" in summary:
    lines.append(f"MMH: {summary['mmh_counts']}")
  if "danger_zone" in summary:
    dz = summary["danger_zone"]
    text = dz.get("text") or f"[{dz['lo']:.3g}, {dz['hi']:.3g}]"
    lines.append(f"danger zone: {text}")
  return "\n".join(lines)


def _main(argv):
  from absl import flags

  del argv
  if flags.FLAGS["verbosity"].value < 1:
    for name in _NOISY_LOGGERS:
      py_logging.getLogger(name).setLevel(py_logging.WARNING)
  cfg = flags.FLAGS["config"].value
  print(summary_lines(audit(cfg, _workdir(cfg))))


def main(argv=None) -> None:
  """Console-script entry point ``memjax-audit`` (absl flags; ``--config`` defaults to the
  audit's own config file). ``argv`` (default ``sys.argv``) lets a test run the command
  in-process; the ``--config.*`` overrides are registered from it."""
  import sys

  from absl import app, flags
  from ml_collections import config_flags

  argv = list(sys.argv if argv is None else argv)
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      argv[i] = "--config=" + resolve_config_spec(arg[len("--config=") :])
  if "config" not in flags.FLAGS:  # the --config.* overrides are read from `argv`
    config_flags.DEFINE_config_file("config", CONFIG, "audit config file[:variant]", sys_argv=argv)
  app.run(_main, argv)
