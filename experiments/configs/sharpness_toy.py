"""Config for ``experiments/sharpness_toy.py``; ``:smoke`` is the tiny variant."""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""            # default: runs/sharpness_toy/<timestamp>
  c.progress = True
  c.num_train = 100         # ≈5 copies of ONE sharp-mode point + ≈95 distinct broad-mode points
  c.sharp_mean = (2.5, 2.5)
  c.sharp_std = 0.01
  c.sharp_weight = 0.05
  c.model = ml_collections.ConfigDict(dict(hidden=(128, 128, 128), time_dim=32, steps=8000, batch_size=256,
                                           lr=2e-3))
  c.num_samples = 1000
  c.num_steps = 100         # Euler steps (t = 0 noise → 1 data)
  c.mem_c = 1 / 3
  c.t_grid = (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95)
  c.t_detect = 0.5          # the time whose ROC is plotted / reported as "detection_at_t_detect"
  # SAIL on x0 with g(x0) = s(Φ_{0→t_s}(x0), t_s); L = ||g(x0 + δ g) − g||² + α||x0||².
  c.sail = ml_collections.ConfigDict(dict(t_s=0.5, alpha=0.02, delta=0.05, threshold=0.05, lr=0.05,
                                          max_iters=100))

  if arg == "smoke":
    c.model.hidden = (32, 32)
    c.model.steps = 300
    c.model.batch_size = 64
    c.num_samples = 64
    c.num_steps = 20
    c.mem_c = 0.9           # both classes present so the smoke detector numbers are finite
    c.t_grid = (0.1, 0.5, 0.9)
    c.sail.max_iters = 5
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'smoke'.")
  return c
