"""Config for ``experiments/fm_toy.py``; ``--config=experiments/configs/fm_toy.py:smoke`` is the tiny variant."""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""          # default: runs/fm_toy/<timestamp>
  c.num_samples = 2000    # generated samples per data set
  c.cs = (0.1, 0.2, 0.25, 1 / 3, 0.4, 0.5, 0.75, 1.0)
  c.solver = "tsit5"
  c.rtol = 1e-5
  c.atol = 1e-5
  c.progress = True

  c.two_point = ml_collections.ConfigDict(dict(
      m=1.0, hidden=(64, 64, 64), time_dim=32, steps=4000, batch_size=256, lr=2e-3, ema_decay=0.999))
  c.gmm2d = ml_collections.ConfigDict(dict(
      num_modes=8, radius=2.0, std=0.15, num_train=16, hidden=(128, 128, 128), time_dim=32,
      steps=4000, batch_size=256, lr=2e-3, ema_decay=0.999))

  if arg == "smoke":
    c.num_samples = 64
    for sub in (c.two_point, c.gmm2d):
      sub.hidden = (16, 16)
      sub.steps = 60
      sub.batch_size = 32
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'smoke'.")
  return c
