"""Config of ``experiments/lid/detection.py``.

Variants ``""`` (default), ``memorise`` (the training used before the held-out rule was fixed:
30000 steps, no EMA, no early stopping, final parameters) and ``smoke``.
"""

import ml_collections

from experiments import configs_common as cc
from experiments.lid import fitting


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg, ("", "smoke", "memorise"))
  c = cc.base()

  # Digits (8×8, flattened to D = 64, in [−1, 1]); classes () = all classes.
  c.data = ml_collections.ConfigDict(dict(num_train=30, classes=()))
  # Flow matching (linear path, data at t = 1); cap `steps`, stopped by the held-out rule of
  # experiments/lid/fitting.py (fixed before any LID or detection number was looked at; the
  # held-out digits are all digits not trained on), keeping the best EMA parameters.
  c.model = cc.mlp_model((256, 256, 256))
  c.train = cc.adam_train(30000, 128, ema_decay=0.999)
  c.train.stopping = fitting.stopping_section()
  # Generation with an adaptive ODE solver (memjax.sampling.generate).
  c.sample = cc.ode_sample(500, tol=1e-4)
  # A sample is memorised when d1² <= mem_c d2² (nearest / second-nearest training image).
  c.detect = ml_collections.ConfigDict(dict(mem_c=1 / 3))
  # FLIPD of the linear-FM velocity field (exact and Hutchinson) at the FM t0 with the noise level
  # σ/ψ of VP t0 = vp_t0 (≈ 0.852); t0_grid (FM times, increasing noise) for the curve and knee.
  c.lid = ml_collections.ConfigDict(
    dict(
      vp_t0=0.05,
      t0_grid=(0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6),
      n_probes=4,
      batch_size=100,
    )
  )

  if arg == "memorise":
    fitting.memorise(c.train)
  if arg == "smoke":
    c.data.num_train = 30
    fitting.shrink(c, (32, 32), steps=200, batch_size=32)
    c.sample.num_samples = 48
    c.detect.mem_c = 0.9  # a mix of both classes so the smoke detector numbers are finite
    c.lid.t0_grid = (0.99, 0.95, 0.8)
  return c
