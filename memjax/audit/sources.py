"""Where the audit CLI finds a checkpoint's training data: one recipe per experiment.

A checkpoint stores the network, not the data, so the CLI rebuilds the training set from the
experiment's config exactly as the experiment did: with the experiment's own loader where it has
one (found by name at run time: the installed package never imports the ``experiments`` folder),
else with the same :mod:`memjax.data` calls and keys. When the checkpoint's fingerprint holds a
hash of the training data (:func:`memjax.training.data_fingerprint`), the CLI checks the rebuilt
set against it.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import NamedTuple

import jax
import ml_collections
import numpy as np

from memjax import data
from memjax.audit import toy


class Data(NamedTuple):
  """Training points ``(N, D)``, held-out points ``(M, D)`` (or ``None``) and the point shape."""

  train: np.ndarray
  held_out: np.ndarray | None
  data_shape: tuple


def repository_on_path() -> None:
  """Put the working directory on ``sys.path`` when it holds an ``experiments`` folder (a console
  script run from the repository root does not see it otherwise)."""
  root = os.getcwd()
  if os.path.isdir(os.path.join(root, "experiments")) and root not in sys.path:
    sys.path.insert(0, root)


def _experiment_module(name: str):
  """``experiments.<name>``, from the repository root."""
  repository_on_path()
  try:
    return importlib.import_module(f"experiments.{name}")
  except ModuleNotFoundError as err:
    if err.name not in ("experiments", f"experiments.{name}"):
      raise
    raise ValueError(
      f"the data recipe of {name!r} needs the repository's `experiments` folder: run "
      "memjax-audit from the repository root."
    ) from err


def _laplace_images(exp: dict) -> Data:
  images = _experiment_module("laplace.images")
  # The key experiments.laplace.images.run gives its data: the first of split(PRNGKey(seed), 4).
  k_data = jax.random.split(jax.random.PRNGKey(int(exp["seed"])), 4)[0]
  train, held, shape = images.load_images(ml_collections.ConfigDict(exp["data"]), k_data)
  return Data(np.asarray(train), np.asarray(held), tuple(shape))


def _laplace_toy_2d(exp: dict) -> Data:
  # experiments.laplace.toy_2d.run: (k_data, k_test, ...) = split(PRNGKey(seed), 4), ring mixture.
  k_data, k_test, _, _ = jax.random.split(jax.random.PRNGKey(int(exp["seed"])), 4)
  d = exp["data"]
  gmm = data.ring_mixture(int(d["num_modes"]), float(d["radius"]), float(d["std"]))
  train, _ = data.sample_mixture(k_data, gmm, int(d["num_train"]))
  test, _ = data.sample_mixture(k_test, gmm, int(d["num_test"]))
  return Data(np.asarray(train), np.asarray(test), (2,))


def _audit_toy(exp: dict) -> Data:
  d = toy.make_data(exp["data"])
  return Data(d.train, d.held_out, (d.train.shape[1],))


SOURCES = {
  "laplace.images": _laplace_images,
  "laplace.toy_2d": _laplace_toy_2d,
  "audit.toy": _audit_toy,
}


def experiment_data(experiment: str, exp_cfg) -> Data:
  """The training (and held-out) data experiment ``experiment`` used with config ``exp_cfg``.

  Raises:
    ValueError: for an experiment without a recipe (listing those with one).
  """
  if experiment not in SOURCES:
    raise ValueError(f"`experiment` must be one of {sorted(SOURCES)}; got {experiment!r}.")
  exp = exp_cfg.to_dict() if hasattr(exp_cfg, "to_dict") else dict(exp_cfg)
  return SOURCES[experiment](exp)
