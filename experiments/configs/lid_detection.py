"""Config for ``experiments/lid_detection.py``; ``:smoke`` is the tiny variant."""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""          # default: runs/lid_detection/<timestamp>
  c.progress = True
  c.num_train = 30        # digits (8×8, flattened to D = 64, in [−1, 1])
  c.classes = ()          # () = all classes
  c.model = ml_collections.ConfigDict(dict(hidden=(256, 256, 256), time_dim=32, steps=30000, batch_size=128,
                                           lr=2e-3, ema_decay=0.0))
  c.num_samples = 500
  c.solver = "tsit5"
  c.rtol = 1e-4
  c.atol = 1e-4
  c.mem_c = 1 / 3
  # FLIPD of the linear-FM velocity field at t0 near 1 (σ = 1 − t0): exact and Hutchinson.
  c.lid = ml_collections.ConfigDict(dict(t0=0.95, t0_grid=(0.99, 0.98, 0.95, 0.9, 0.8, 0.6), n_probes=4,
                                         batch_size=100))

  if arg == "smoke":
    c.num_train = 30
    c.model.hidden = (32, 32)
    c.model.steps = 200
    c.model.batch_size = 32
    c.num_samples = 48
    c.mem_c = 0.9          # a mix of both classes so the smoke detector numbers are finite
    c.lid.t0_grid = (0.99, 0.95, 0.8)
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'smoke'.")
  return c
