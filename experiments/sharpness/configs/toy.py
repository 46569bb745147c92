"""Config of ``experiments/sharpness/toy.py``; variants ``""`` (default) and ``smoke``."""

import ml_collections

from experiments import configs_common as cc
from experiments.sharpness.configs import sail_section, shrink_sail


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg)
  c = cc.base()

  # ≈5 copies of ONE sharp-mode point + ≈95 distinct broad-mode points.
  c.data = ml_collections.ConfigDict(
    dict(num_train=100, sharp_mean=(2.5, 2.5), sharp_std=0.01, sharp_weight=0.05)
  )
  c.model = cc.mlp_model((128, 128, 128))
  c.train = cc.adam_train(8000, 256)
  # Euler steps (t = 0 noise → 1 data).
  c.sample = ml_collections.ConfigDict(dict(num_samples=1000, num_steps=100))
  # Memorised when d1/d2 <= mem_c; sharpness profile at t_grid; t_detect: the time whose ROC is
  # plotted / reported as "detection_at_t_detect".
  c.detect = ml_collections.ConfigDict(
    dict(mem_c=1 / 3, t_grid=(0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95), t_detect=0.5)
  )
  # SAIL (configs/__init__.py sail_section, protocol fixed before the issue-27 runs): ε-prediction
  # g = −σ s of the unconditional score (no guidance difference here), SD-scaled δ, α and
  # threshold, arms sail / sail_score / sail_shell / rejection. Unlike the conditional experiments
  # the state is the Euler state at t_s = 0.5 ("euler"): at the SNR-matched t ≈ 0.07 the
  # unconditional score of this mixture is nearly Gaussian and carries no sign of the sharp mode.
  c.sail = sail_section(t_s=0.5)
  c.sail.state = "euler"

  if arg == "smoke":
    cc.shrink_mlp(c, (32, 32), steps=300, batch_size=64)
    c.sample.update(num_samples=64, num_steps=20)
    # mem_c: both classes present so the smoke detector numbers are finite.
    c.detect.update(mem_c=0.9, t_grid=(0.1, 0.5, 0.9))
    shrink_sail(c.sail)
  return c
