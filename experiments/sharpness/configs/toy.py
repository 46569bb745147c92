"""Config of ``experiments/sharpness/toy.py``; variants ``""`` (default) and ``smoke``."""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""  # default: runs/<experiment>/<timestamp>
  c.progress = True

  # ≈5 copies of ONE sharp-mode point + ≈95 distinct broad-mode points.
  c.data = ml_collections.ConfigDict(
    dict(num_train=100, sharp_mean=(2.5, 2.5), sharp_std=0.01, sharp_weight=0.05)
  )
  c.model = ml_collections.ConfigDict(dict(hidden=(128, 128, 128), time_dim=32))
  c.train = ml_collections.ConfigDict(dict(steps=8000, batch_size=256, lr=2e-3))
  # Euler steps (t = 0 noise → 1 data).
  c.sample = ml_collections.ConfigDict(dict(num_samples=1000, num_steps=100))
  # Memorised when d1/d2 <= mem_c; sharpness profile at t_grid; t_detect: the time whose ROC is
  # plotted / reported as "detection_at_t_detect".
  c.detect = ml_collections.ConfigDict(
    dict(mem_c=1 / 3, t_grid=(0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95), t_detect=0.5)
  )
  # SAIL on x0 with g(x0) = s(Φ_{0→t_s}(x0), t_s); L = ||g(x0 + δ g) − g||² + α||x0||².
  c.sail = ml_collections.ConfigDict(
    dict(t_s=0.5, alpha=0.02, delta=0.05, threshold=0.05, lr=0.05, max_iters=100)
  )

  if arg == "smoke":
    c.model.hidden = (32, 32)
    c.train.steps = 300
    c.train.batch_size = 64
    c.sample.num_samples = 64
    c.sample.num_steps = 20
    c.detect.mem_c = 0.9  # both classes present so the smoke detector numbers are finite
    c.detect.t_grid = (0.1, 0.5, 0.9)
    c.sail.max_iters = 5
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'smoke'.")
  return c
