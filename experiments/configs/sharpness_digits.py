"""Config for ``experiments/sharpness_digits.py``; ``:smoke`` is the tiny variant."""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""             # default: runs/sharpness_digits/<timestamp>
  c.progress = True
  c.general_class = 0        # label 0: many distinct images (generalised)
  c.dup_class = 1            # label 1: a few distinct images + one image repeated `copies` times
  c.n_general = 150
  c.n_dup_class_distinct = 20
  c.copies = 100
  c.p_uncond = 0.2           # label dropout for classifier-free guidance
  c.guidance = 5.0
  c.model = ml_collections.ConfigDict(dict(hidden=(256, 256, 256), time_dim=32, steps=10000, batch_size=128,
                                           lr=2e-3))
  c.num_samples_per_class = 200
  c.num_steps = 50           # Euler steps; the "first sampling step" is t_1 = 1/num_steps
  c.mem_c = 1 / 3
  c.t_grid = (0.02, 0.2, 0.5, 0.8)
  c.k = 3
  c.lanczos_iters = 16
  # SAIL: L(x) = ||s^Δ(x + δ s^Δ(x)) − s^Δ(x)||² + α||x||², s^Δ at t_s for label 1; per-sample stop at L ≤ 1.0
  # (plain-noise median L ≈ 16.7, of which α||x||² ≈ 0.32; at t_s = 0.2, δ = 0.05 the sharpness term was negligible).
  c.sail = ml_collections.ConfigDict(dict(t_s=0.5, alpha=0.005, delta=0.5, threshold=1.0, lr=0.05,
                                          max_iters=100))

  if arg == "smoke":
    c.n_general = 40
    c.n_dup_class_distinct = 5
    c.copies = 20
    c.model.hidden = (32, 32)
    c.model.steps = 200
    c.model.batch_size = 32
    c.num_samples_per_class = 24
    c.num_steps = 10
    c.guidance = 1.0
    c.mem_c = 0.97         # both classes present so the smoke detector numbers are finite
    c.t_grid = (0.1, 0.5)
    c.k = 1
    c.lanczos_iters = 4
    c.sail.max_iters = 5
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'smoke'.")
  return c
