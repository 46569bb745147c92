"""Config of ``experiments/regimes/noise_regimes.py``; variants ``""``, ``smoke``, ``smoke_digits``.

Global sections: ``curves`` (regime curves and boundaries), ``eval`` (M_c thresholds),
``intervene`` (window swaps and blends). Each data set (``toy2d``, ``digits``) has its own
``data``, ``curves``, ``model``, ``train`` and ``sample`` (probability-flow grid) sections.
"""

import ml_collections

from experiments import configs_common as cc

ConfigDict = ml_collections.ConfigDict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg, ("", "smoke", "smoke_digits"))
  c = cc.base(progress=False, datasets=("toy2d", "digits"))

  c.curves = ConfigDict(
    dict(
      shell_c=5.0,  # χ² tail parameter of the Gaussian shells
      threshold=0.8,  # danger zone: C_σ ≥ threshold and W_σ ≥ threshold
      threshold_wide=0.5,  # second targeted window: σ_small .. last σ with W_σ ≥ threshold_wide
      num_noise=4,  # noise draws per point for the curves
      num_sigmas=25,
    )
  )
  c.eval = ConfigDict(dict(cs=(0.1, 0.2, 1 / 3, 0.5)))  # must hold 1/3 (the headline M_1/3)
  c.intervene = ConfigDict(
    dict(
      lams=(0.25, 0.5, 1.0),  # blend weights toward D_lin for the interventions
      num_windows=8,
    )
  )

  # 2D: subsets of an 8-mode ring mixture; held-out points from the same mixture.
  c.toy2d = ConfigDict(
    dict(
      data=ConfigDict(dict(ns=(16, 64, 256), num_modes=8, radius=2.0, std=0.15, num_held_out=2000)),
      curves=ConfigDict(dict(sigma_range=(0.005, 20.0))),
      model=cc.mlp_model((128, 128, 128)),
      train=cc.adam_train(3000, 256, ema_decay=0.999),
      sample=ConfigDict(dict(num_samples=512, sigma_min=0.005, sigma_max=40.0, num_steps=64)),
    )
  )
  # Digits (d = 64, [−1, 1]); held-out = the remaining images.
  c.digits = ConfigDict(
    dict(
      data=ConfigDict(dict(ns=(16, 64, 256))),
      curves=ConfigDict(dict(sigma_range=(0.05, 80.0))),
      model=cc.mlp_model((256, 256, 256)),
      train=cc.adam_train(3000, 256, ema_decay=0.999),
      sample=ConfigDict(dict(num_samples=256, sigma_min=0.02, sigma_max=80.0, num_steps=64)),
    )
  )

  if arg in ("smoke", "smoke_digits"):
    c.datasets = ("toy2d",) if arg == "smoke" else ("digits",)  # one data set each: a run ≤ 30 s
    c.curves.num_noise = 1
    c.curves.num_sigmas = 8
    c.intervene.lams = (1.0,)
    c.intervene.num_windows = 3
    for name in ("toy2d", "digits"):
      g = c[name]
      g.data.ns = (16,)
      cc.shrink_mlp(g, (16, 16), steps=60, batch_size=32)
      g.sample.num_steps = 12
    c.toy2d.data.num_held_out = 200
    c.toy2d.sample.num_samples = 64
    c.digits.sample.num_samples = 32
  return c
