"""Config of ``experiments/lid/mmh_von_mises.py``; variants ``""`` (default) and ``smoke``."""

import ml_collections

from experiments import configs_common as cc


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg)
  c = cc.base()

  # Circle of radius 1 with von Mises angles (sparse arc around mu + π) and a duplicated atom.
  c.data = ml_collections.ConfigDict(
    dict(n_circle=30, kappa=2.0, mu=0.0, radius=1.0, atom=(0.0, 0.0), copies=20)
  )
  # Flow matching (linear path, data at t = 1), trained long enough to memorise; ema_decay 0:
  # no EMA.
  c.model = cc.mlp_model((128, 128, 128))
  c.train = cc.adam_train(20000, 256, ema_decay=0.0)
  c.sample = cc.ode_sample(1000, tol=1e-5)
  # Memorised when d1/d2 <= mem_c (against the de-duplicated training set).
  c.detect = ml_collections.ConfigDict(dict(mem_c=1 / 3))
  # LID: FLIPD (exact, D = 2) at t0 near the data end (σ = 1 − t0); LID* analytic and by LPCA.
  c.lid = ml_collections.ConfigDict(
    dict(
      t0=0.95,
      t0_grid=(0.995, 0.99, 0.98, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8, 0.7),
      lpca_k=10,
      tol=0.5,
      dd_max_lid=0.5,
    )
  )

  if arg == "smoke":
    cc.shrink_mlp(c, (32, 32), steps=200, batch_size=64)
    c.sample.num_samples = 64
    c.detect.mem_c = 0.9  # a mix of both classes so the smoke detector numbers are finite
    c.lid.t0_grid = (0.99, 0.95, 0.8)
  return c
