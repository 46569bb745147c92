"""Config of ``experiments/fm_toy.py``; ``--config=experiments/configs/fm_toy.py:smoke`` is tiny."""

import ml_collections

from experiments import configs_common as cc


def _section(model, train, **data) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(data, model=model, train=train))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg)
  c = cc.base()  # default workdir: runs/fm_toy/<timestamp>

  # One MAP per data set: data fields, then its model and training sections.
  train = lambda: cc.adam_train(4000, 256, ema_decay=0.999)
  c.two_point = _section(cc.mlp_model((64, 64, 64)), train(), m=1.0)
  c.gmm2d = _section(
    cc.mlp_model((128, 128, 128)), train(), num_modes=8, radius=2.0, std=0.15, num_train=16
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
      cc.shrink_mlp(sub, (16, 16), steps=60, batch_size=32)
  return c
