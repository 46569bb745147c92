"""Where the audit finds the training data: a source the user names, or the checkpoint's recipe.

``--config.data.source`` names the data the model was trained on, in any form
:func:`memjax.data.load_source` reads (an ``.npy``/``.npz`` file, a folder of images,
``tfds:NAME[:SPLIT]``, ``digits`` or ``MODULE:FUNCTION``); ``--config.data.held_out`` the same for
held-out data. Without a source the checkpoint's own recipe is used: memjax's training loop and
experiments store one in the checkpoint metadata (``metadata["data"]``,
:func:`memjax.data.recipe`: the source with the indices of the points taken from it, or small
sets inline, each with its hash), so the audit needs no knowledge of any experiment's key splits
and never imports the ``experiments`` folder. Either way the training set is hashed
(:func:`memjax.data.fingerprint`) and the hash goes into the summary.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from memjax import data


class Data(NamedTuple):
  """Training points ``(N, D)``, held-out points ``(M, D)`` (or ``None``), the point shape and a
  description (sources and hashes) for the summary."""

  train: np.ndarray
  held_out: np.ndarray | None
  data_shape: tuple
  info: dict = {}


def _describe(train, held, source, held_source) -> dict:
  out = {
    "data_source": source,
    "num_train": int(len(train)),
    "data_sha256": data.fingerprint(train)["sha256"],
  }
  if held is not None:
    out.update(held_out_source=held_source, held_out_sha256=data.fingerprint(held)["sha256"])
  return out


def load(data_cfg, recipe: dict | None = None, where: str = "the checkpoint") -> Data:
  """The training (and held-out) data of ``data_cfg``, else of ``recipe``.

  Args:
    data_cfg: the audit config's ``data`` section (``source``, ``held_out``, ``max_examples``,
      ``value_range``).
    recipe: a :func:`memjax.data.recipe` (a checkpoint's ``metadata["data"]``) or ``None``.
    where: what holds ``recipe`` (for messages).

  Returns:
    :class:`Data` with flattened rows.

  Raises:
    ValueError: when neither a source nor a recipe is given, or loading fails (naming the
      source), or the training and held-out points differ in shape.
  """
  source = str(data_cfg.get("source", "") or "")
  held_source = str(data_cfg.get("held_out", "") or "")
  kw = dict(
    value_range=tuple(data_cfg.get("value_range", (-1.0, 1.0))),
    max_examples=int(data_cfg.get("max_examples", 0) or 0) or None,
  )
  if source:
    train = data.load_source(source, **kw)
    held = data.load_source(held_source, **kw) if held_source else None
  elif recipe:
    train, held = data.from_recipe(recipe)
    source = f"recipe in {where} ({recipe['train']['source']})"
    held_source = held_source or (
      None if held is None else f"recipe in {where} ({recipe['held_out']['source']})"
    )
    if held_source and not held_source.startswith("recipe"):
      held = data.load_source(held_source, **kw)
  else:
    raise ValueError(
      f"{where} stores no data recipe: pass the training data as --config.data.source=PATH "
      "(.npy/.npz file, image folder, tfds:NAME[:SPLIT], digits or MODULE:FUNCTION)."
    )
  train = np.asarray(train)
  shape = tuple(train.shape[1:]) if train.ndim > 2 else (int(np.prod(train.shape[1:])),)
  if held is not None:
    held = np.asarray(held)
    if int(np.prod(held.shape[1:])) != int(np.prod(shape)):
      raise ValueError(
        f"`data.held_out` points have shape {held.shape[1:]}, the training points {shape}."
      )
    held = held.reshape(len(held), -1)
  info = _describe(train, held, source, held_source)
  return Data(train.reshape(len(train), -1), held, shape, info)
