"""Config of ``experiments/lid/mmh_von_mises.py``.

Variants ``""`` (default), ``memorise`` (the training used before the held-out rule was fixed:
20000 steps, no EMA, no early stopping, final parameters) and ``smoke``.
"""

import ml_collections

from experiments import configs_common as cc
from experiments.lid import fitting


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg, ("", "smoke", "memorise"))
  c = cc.base()

  # Circle of radius 1 with von Mises angles (sparse arc around mu + π) and a duplicated atom.
  c.data = ml_collections.ConfigDict(
    dict(
      n_circle=30,
      kappa=2.0,
      mu=0.0,
      radius=1.0,
      atom=(0.0, 0.0),
      copies=20,
      num_heldout=4096,  # fresh draws (same atom share) for the held-out stopping rule
    )
  )
  # Flow matching (linear path, data at t = 1); cap `steps`, stopped by the held-out rule of
  # experiments/lid/fitting.py (fixed before any LID or detection number was looked at), keeping
  # the best EMA parameters.
  c.model = cc.mlp_model((128, 128, 128))
  c.train = cc.adam_train(20000, 256, ema_decay=0.999)
  c.train.stopping = fitting.stopping_section()
  c.sample = cc.ode_sample(1000, tol=1e-5)
  # Memorised when d1² <= mem_c d2² (the papers' squared ratio, de-duplicated training set) AND
  # d1 <= spacing_factor × the arc spacing (median nearest-neighbour distance of the circle's
  # training points): the ratio alone flags most fresh samples of the true circle density. The
  # baseline is measured on num_baseline such fresh samples.
  c.detect = ml_collections.ConfigDict(dict(mem_c=1 / 3, spacing_factor=0.1, num_baseline=5000))
  # LID: FLIPD (exact, D = 2) at the FM t0 with σ/ψ = noise_to_signal_factor × arc spacing (below
  # the spacing); also at the FM time matched to VP t0 = vp_t0 and at the knee of t0_grid (FM
  # times, increasing noise). LID* analytic and by LPCA.
  c.lid = ml_collections.ConfigDict(
    dict(
      noise_to_signal_factor=0.25,
      vp_t0=0.05,
      t0_grid=(0.999, 0.998, 0.995, 0.99, 0.98, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8, 0.7),
      lpca_k=10,
      tol=0.5,
      dd_max_lid=0.5,
    )
  )

  if arg == "memorise":
    fitting.memorise(c.train)
  if arg == "smoke":
    fitting.shrink(c, (32, 32), steps=200, batch_size=64)
    c.data.num_heldout = 256
    c.sample.num_samples = 64
    # a mix of both classes so the smoke detector numbers are finite
    c.detect.update(mem_c=0.9, spacing_factor=10.0, num_baseline=500)
    c.lid.t0_grid = (0.99, 0.95, 0.8)
  return c
