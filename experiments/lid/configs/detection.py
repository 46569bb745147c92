"""Config of ``experiments/lid/detection.py``; variants ``""`` (default) and ``smoke``."""

import ml_collections

from experiments import configs_common as cc


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg)
  c = cc.base()

  # Digits (8×8, flattened to D = 64, in [−1, 1]); classes () = all classes.
  c.data = ml_collections.ConfigDict(dict(num_train=30, classes=()))
  # Flow matching (linear path, data at t = 1); ema_decay 0: no EMA.
  c.model = cc.mlp_model((256, 256, 256))
  c.train = cc.adam_train(30000, 128, ema_decay=0.0)
  # Generation with an adaptive ODE solver (memjax.sampling.generate).
  c.sample = cc.ode_sample(500, tol=1e-4)
  # A sample is memorised when d1/d2 <= mem_c (nearest / second-nearest training image).
  c.detect = ml_collections.ConfigDict(dict(mem_c=1 / 3))
  # FLIPD of the linear-FM velocity field at t0 near 1 (σ = 1 − t0): exact and Hutchinson.
  c.lid = ml_collections.ConfigDict(
    dict(t0=0.95, t0_grid=(0.99, 0.98, 0.95, 0.9, 0.8, 0.6), n_probes=4, batch_size=100)
  )

  if arg == "smoke":
    c.data.num_train = 30
    cc.shrink_mlp(c, (32, 32), steps=200, batch_size=32)
    c.sample.num_samples = 48
    c.detect.mem_c = 0.9  # a mix of both classes so the smoke detector numbers are finite
    c.lid.t0_grid = (0.99, 0.95, 0.8)
  return c
