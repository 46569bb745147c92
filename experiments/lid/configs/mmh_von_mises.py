"""Config of ``experiments/lid/mmh_von_mises.py``; variants ``""`` (default) and ``smoke``."""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""  # default: runs/<experiment>/<timestamp>
  c.progress = True

  # Circle of radius 1 with von Mises angles (sparse arc around mu + π) and a duplicated atom.
  c.data = ml_collections.ConfigDict(
    dict(n_circle=30, kappa=2.0, mu=0.0, radius=1.0, atom=(0.0, 0.0), copies=20)
  )
  # Flow matching (linear path, data at t = 1), trained long enough to memorise.
  c.model = ml_collections.ConfigDict(dict(hidden=(128, 128, 128), time_dim=32))
  c.train = ml_collections.ConfigDict(
    dict(steps=20000, batch_size=256, lr=2e-3, ema_decay=0.0)
  )  # 0: no EMA
  c.sample = ml_collections.ConfigDict(dict(num_samples=1000, solver="tsit5", rtol=1e-5, atol=1e-5))
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
    c.model.hidden = (32, 32)
    c.train.steps = 200
    c.train.batch_size = 64
    c.sample.num_samples = 64
    c.detect.mem_c = 0.9  # a mix of both classes so the smoke detector numbers are finite
    c.lid.t0_grid = (0.99, 0.95, 0.8)
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'smoke'.")
  return c
