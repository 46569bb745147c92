"""Config of ``experiments/laplace/two_point_1d.py`` (the ``make demo`` default).

Variants (``--config=experiments/laplace/configs/two_point_1d.py:VARIANT``): ``""`` (default)
and ``smoke`` (tiny, for the test suite).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""  # default: runs/two_point_1d/<timestamp>
  c.progress = True

  c.data = ml_collections.ConfigDict()
  c.data.m = 1.0  # training set {-m, +m}
  c.data.target_std = 0.1  # target GMM ½N(-m, s²) + ½N(m, s²) for the KL

  # MAP (flow matching).
  c.model = ml_collections.ConfigDict()
  c.model.hidden = (32, 32, 32)
  c.model.time_dim = 16

  c.train = ml_collections.ConfigDict()
  c.train.steps = 4000
  c.train.batch_size = 256
  c.train.lr = 2e-3
  c.train.ema_decay = 0.999
  c.train.checkpoint_dir = ""

  c.posterior = ml_collections.ConfigDict()
  # Curvature loss L(θ) = s Σ_b ℓ_b + (α/2)||θ||² on frozen triples.
  c.posterior.select = ""  # "" = all parameters (toy); e.g. "dense_0" for a subset
  c.posterior.num_triples = 256
  c.posterior.loss_scale = 1.0  # s: each frozen triple counts as one observation (batch-sum loss)
  c.posterior.alpha = 1.0  # prior precision α
  c.posterior.lanczos_k = 20
  # Posterior samples: every sampler of laplace.SAMPLERS named here gets the same v (paired).
  c.posterior.samplers = ("euclidean", "riemannian")
  c.posterior.mode = "full"
  c.posterior.etas = (0.02, 0.05, 0.1, 0.2)
  c.posterior.num_posterior = 16
  c.posterior.geo_solver = "tsit5"
  c.posterior.geo_rtol = 1e-6
  c.posterior.geo_atol = 1e-8
  c.posterior.geo_max_steps = 2048

  # Generation and evaluation.
  c.eval = ml_collections.ConfigDict()
  c.eval.num_gen = 256
  c.eval.gen_solver = "tsit5"
  c.eval.gen_rtol = 1e-5
  c.eval.gen_atol = 1e-5
  c.eval.num_heldout_triples = 4096
  c.eval.cs = (0.1, 0.2, 0.25, 1 / 3, 0.5, 0.75, 1.0)
  c.eval.compare = ("euclidean", "riemannian")  # (baseline, candidate) of the claims
  c.eval.kde_bandwidth = 0.05
  c.eval.field_eta = 0.2  # η shown in the velocity-field panels

  if arg == "smoke":
    c.model.hidden = (8, 8)
    c.model.time_dim = 8
    c.train.steps = 100
    c.train.batch_size = 32
    c.posterior.num_triples = 32
    c.posterior.lanczos_k = 4
    c.posterior.etas = (0.05, 0.2)
    c.posterior.num_posterior = 3
    c.eval.field_eta = 0.2
    c.eval.num_gen = 32
    c.eval.num_heldout_triples = 128
  elif arg not in (None, ""):
    raise ValueError(f"unknown config variant {arg!r}; use '' or 'smoke'.")
  return c
