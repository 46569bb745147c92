"""The ``memjax-audit`` command: absl flags and an ml_collections config, one run directory.

::

  memjax-audit --config=memjax/audit/configs.py --config.checkpoint=runs/<run>/checkpoints
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
import logging as py_logging
import os

import jax

from memjax import training
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
  """``get_config(variant)`` of a config file given as ``PATH[:VARIANT]``."""
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"`experiment_config` {path!r} is not a file.")
  sources.repository_on_path()  # experiment configs import `experiments.configs_common`
  mod_spec = importlib.util.spec_from_file_location("_audit_experiment_config", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def build(cfg, workdir: str):
  """``(Model, Data)`` of the config: the checkpoint (trained first for the toy) and its data."""
  checkpoint = cfg.checkpoint
  exp_cfg = None
  if cfg.experiment_config:
    exp_cfg = load_config_file(cfg.experiment_config).to_dict()
  if cfg.experiment == "audit.toy":
    exp_cfg = exp_cfg or cfg.toy.to_dict()
    if not checkpoint:
      checkpoint = os.path.join(workdir, "checkpoints")
      data = toy.make_data(exp_cfg["data"])
      toy.train(
        exp_cfg, data.train, jax.random.PRNGKey(int(exp_cfg["seed"])), checkpoint, cfg.progress
      )
  if not checkpoint:
    raise ValueError("`checkpoint` is required: pass --config.checkpoint=runs/<run>/checkpoints.")
  if exp_cfg is None:
    exp_cfg = model.read_checkpoint(checkpoint, None if cfg.step < 0 else cfg.step).metadata.get(
      "config"
    )
    if exp_cfg is None:
      raise ValueError(
        f"checkpoint {checkpoint!r} stores no config: pass --config.experiment_config=PATH."
      )
  data = sources.experiment_data(cfg.experiment, exp_cfg)
  meta = model.read_checkpoint(checkpoint, None if cfg.step < 0 else cfg.step).metadata
  stored = meta.get("fingerprint", {}).get("extra", {}).get("data")
  if stored and stored != training.data_fingerprint(data.train):
    raise ValueError(
      f"the training data rebuilt for experiment {cfg.experiment!r} differs from the data hashed "
      f"in checkpoint {checkpoint!r} (another config or seed?); pass the config that trained it."
    )
  m = model.from_checkpoint(
    checkpoint,
    exp_cfg,
    step=None if cfg.step < 0 else int(cfg.step),
    use_ema=bool(cfg.use_ema),
    data_shape=data.data_shape,
  )
  m.info["experiment"] = cfg.experiment
  return m, data


def audit(cfg, workdir: str) -> dict:
  """Build the model of ``cfg``, run every lens, write the report files; returns the summary
  (with ``files``: the paths written)."""
  os.makedirs(workdir, exist_ok=True)
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
  return dict(rep.summary, files=files)


def _workdir(cfg) -> str:
  if cfg.workdir:
    return cfg.workdir
  stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S-%f")
  return os.path.join("runs", "audit", stamp)


def summary_lines(summary: dict) -> str:
  """The closing lines of the CLI: M_c, detection per detector, MMH counts, the danger zone."""
  lines = [f"report: {summary['files']['html']}"]
  lines.append(
    f"memorised {summary['num_memorised']}/{summary['num_scored']} (c = {summary['c']:.3g})"
  )
  for key, title in (
    ("detection", "against the ratio labels"),
    ("detection_vs_held_out", "memorised samples against held-out data"),
  ):
    if summary.get(key):
      lines.append(f"detection {title}:")
    for name, auroc, tpr, _, _ in report.summary_rows(summary, key):
      lines.append(f"  {name:28s} AUROC {auroc:.3f}  TPR@{summary['fpr'] * 100:g}%FPR {tpr:.3f}")
  if "mmh_counts" in summary:
    lines.append(f"MMH: {summary['mmh_counts']}")
  if "danger_zone" in summary:
    dz = summary["danger_zone"]
    lines.append(f"danger zone: [{dz['lo']:.3g}, {dz['hi']:.3g}]")
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
  if "config" not in flags.FLAGS:  # the --config.* overrides are read from `argv`
    config_flags.DEFINE_config_file("config", CONFIG, "audit config file[:variant]", sys_argv=argv)
  app.run(_main, argv)
