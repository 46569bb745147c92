"""Config of ``experiments/fm_toy.py``; ``--config=experiments/configs/fm_toy.py:smoke`` is tiny."""

import ml_collections


def _section(model: dict, train: dict, **data) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(data, model=model, train=train))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""  # default: runs/fm_toy/<timestamp>
  c.progress = True

  # One MAP per data set: data fields, then its model and training sections.
  train = dict(steps=4000, batch_size=256, lr=2e-3, ema_decay=0.999)
  c.two_point = _section(dict(hidden=(64, 64, 64), time_dim=32), dict(train), m=1.0)
  c.gmm2d = _section(
    dict(hidden=(128, 128, 128), time_dim=32),
    dict(train),
    num_modes=8,
    radius=2.0,
    std=0.15,
    num_train=16,
  )

  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 2000  # generated samples per data set
  c.eval.cs = (0.1, 0.2, 0.25, 1 / 3, 0.4, 0.5, 0.75, 1.0)
  c.eval.solver = "tsit5"
  c.eval.rtol = 1e-5
  c.eval.atol = 1e-5

  if arg == "smoke":
    c.eval.num_samples = 64
    for sub in (c.two_point, c.gmm2d):
      sub.model.hidden = (16, 16)
      sub.train.steps = 60
      sub.train.batch_size = 32
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'smoke'.")
  return c
