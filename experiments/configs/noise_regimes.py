"""Config for ``experiments/noise_regimes.py``; ``--config=experiments/configs/noise_regimes.py:smoke`` is the tiny variant."""
import ml_collections


def _group(**kw):
  return ml_collections.ConfigDict(kw)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""             # default: runs/noise_regimes/<timestamp>
  c.progress = False
  c.cs = (0.1, 0.2, 1 / 3, 0.5)
  c.shell_c = 5.0            # χ² tail parameter of the Gaussian shells
  c.threshold = 0.8          # danger zone: C_σ ≥ threshold and W_σ ≥ threshold
  c.threshold_wide = 0.5     # second targeted window: σ_small .. last σ with W_σ ≥ threshold_wide
  c.num_noise = 4            # noise draws per point for the curves
  c.num_curve_sigmas = 25
  c.lams = (0.25, 0.5, 1.0)  # blend weights toward D_lin for the interventions
  c.num_windows = 8
  c.datasets = ("toy2d", "digits")

  # 2D: subsets of an 8-mode ring mixture; held-out points from the same mixture.
  c.toy2d = _group(
      ns=(16, 64, 256), num_modes=8, radius=2.0, std=0.15, num_held_out=2000, num_samples=512,
      curve_sigma_range=(0.005, 20.0), sigma_min=0.005, sigma_max=40.0, num_steps=64,
      hidden=(128, 128, 128), time_dim=32, steps=3000, batch_size=256, lr=2e-3, ema_decay=0.999)
  # Digits (d = 64, [−1, 1]); held-out = the remaining images.
  c.digits = _group(
      ns=(16, 64, 256), num_samples=256,
      curve_sigma_range=(0.05, 80.0), sigma_min=0.02, sigma_max=80.0, num_steps=64,
      hidden=(256, 256, 256), time_dim=32, steps=3000, batch_size=256, lr=2e-3, ema_decay=0.999)

  if arg in ("smoke", "smoke_digits"):
    c.datasets = ("toy2d",) if arg == "smoke" else ("digits",)  # one data set each keeps a run ≤ 30 s
    c.num_noise = 1
    c.num_curve_sigmas = 8
    c.lams = (1.0,)
    c.num_windows = 3
    c.toy2d.update(ns=(16,), num_held_out=200, num_samples=64, num_steps=12, hidden=(16, 16), steps=60,
                   batch_size=32)
    c.digits.update(ns=(16,), num_samples=32, num_steps=12, hidden=(16, 16), steps=60, batch_size=32)
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '', 'smoke' or 'smoke_digits'.")
  return c
