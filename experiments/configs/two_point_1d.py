"""Config for ``experiments/two_point_1d.py`` (the ``make demo`` default); ``:smoke`` is the tiny variant."""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""
  c.progress = True
  c.m = 1.0                      # training set {-m, +m}
  c.target_std = 0.1             # target GMM ½N(-m, s²) + ½N(m, s²) for the KL
  c.kde_bandwidth = 0.05
  # MAP (flow matching).
  c.hidden = (32, 32, 32)
  c.time_dim = 16
  c.steps = 4000
  c.batch_size = 256
  c.lr = 2e-3
  c.ema_decay = 0.999
  c.checkpoint_dir = ""
  # Curvature loss L(θ) = s Σ_b ℓ_b + (α/2)||θ||² on frozen triples.
  c.select = ""                  # "" = all parameters (toy); e.g. "dense_0" for a subset
  c.num_triples = 256
  c.loss_scale = 1.0             # s: each frozen triple counts as one observation (batch-sum loss)
  c.alpha = 1.0                  # prior precision α
  c.lanczos_k = 20
  # Posterior samples.
  c.mode = "full"
  c.etas = (0.02, 0.05, 0.1, 0.2)
  c.num_posterior = 16
  c.geo_solver = "tsit5"
  c.geo_rtol = 1e-6
  c.geo_atol = 1e-8
  c.geo_max_steps = 2048
  # Generation and evaluation.
  c.num_gen = 256
  c.gen_solver = "tsit5"
  c.gen_rtol = 1e-5
  c.gen_atol = 1e-5
  c.num_heldout_triples = 4096
  c.cs = (0.1, 0.2, 0.25, 1 / 3, 0.5, 0.75, 1.0)
  c.field_eta = 0.2              # η shown in the velocity-field panels
  if arg == "smoke":
    c.hidden = (8, 8)
    c.time_dim = 8
    c.steps = 100
    c.batch_size = 32
    c.num_triples = 32
    c.lanczos_k = 4
    c.etas = (0.05, 0.2)
    c.field_eta = 0.2
    c.num_posterior = 3
    c.num_gen = 32
    c.num_heldout_triples = 128
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'smoke'.")
  return c
