"""Config of ``experiments/laplace/images.py``.

Variants (``--config=experiments/laplace/configs/images.py:VARIANT``): ``digits`` (default; CPU,
offline sklearn 8×8 digits), ``mnist`` / ``cifar10`` (GPU sizes; real ``tfds.data_source`` data,
which must be prepared beforehand on an offline machine) and ``smoke`` (tiny, for the test suite).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = arg or "digits"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""  # default: runs/images/<timestamp>
  c.progress = True
  c.x64 = False  # float64 posterior stage (2x slower on CPU); float32 is enough
  # at rtol 1e-4

  c.data = ml_collections.ConfigDict()
  c.data.dataset = "digits"  # digits | mnist | cifar10
  c.data.num_train = 16  # small training subset: the MAP memorises
  c.data.num_heldout = 512  # held-out images for the quality proxy
  c.data.classes = ()  # () = all classes

  # UNet MAP (flow matching).
  c.model = ml_collections.ConfigDict()
  c.model.widths = (16, 32)
  c.model.num_res_blocks = 1
  c.model.time_dim = 16
  c.model.attention = False
  c.model.groups = 8
  c.model.conv = "matmul"  # "matmul" on CPU (fast gradients in loops), "lax" on GPU

  c.train = ml_collections.ConfigDict()
  c.train.steps = 3000
  c.train.batch_size = 64
  c.train.lr = 2e-3
  c.train.warmup = 200  # linear warm-up steps, at most steps // 10 + 1
  c.train.ema_decay = 0.999
  c.train.checkpoint_dir = ""  # "" = <workdir>/checkpoints
  c.train.restore = ""  # checkpoint directory of a finished run: skip training

  c.posterior = ml_collections.ConfigDict()
  # Curvature loss L(θ_B) = s Σ_b ℓ_b + (α/2)||θ_B||² over the FIRST conv layer only.
  c.posterior.select = "['conv_in']"
  c.posterior.num_triples = 32
  c.posterior.loss_scale = 1.0
  c.posterior.alpha = 1.0
  c.posterior.lanczos_k = 20
  # Posterior samples (paired: same z for every η and sampler, same x0 for every model).
  c.posterior.samplers = ("euclidean", "riemannian")
  c.posterior.mode = "full"
  c.posterior.etas = (0.1, 0.3, 0.6)
  c.posterior.num_posterior = 4
  c.posterior.geo_solver = "tsit5"
  c.posterior.geo_rtol = 1e-4
  c.posterior.geo_atol = 1e-6
  c.posterior.geo_max_steps = 256

  # Generation and evaluation.
  c.eval = ml_collections.ConfigDict()
  c.eval.num_gen = 32
  c.eval.gen_solver = "tsit5"
  c.eval.gen_rtol = 1e-3
  c.eval.gen_atol = 1e-3
  c.eval.num_heldout_triples = 128
  c.eval.cs = (0.1, 0.2, 0.25, 1 / 3, 0.5, 0.75, 1.0)
  c.eval.compare = ("euclidean", "riemannian")  # (baseline, candidate) of the claims
  c.eval.num_show = 12  # images per row of the figure grid

  if arg == "smoke":
    c.data.num_train = 8
    c.data.num_heldout = 64
    c.model.widths = (8,)
    c.model.time_dim = 8
    c.model.groups = 4
    c.train.steps = 60
    c.train.batch_size = 16
    c.posterior.num_triples = 16
    c.posterior.lanczos_k = 3
    c.posterior.etas = (0.1,)
    c.posterior.num_posterior = 2
    c.eval.num_gen = 8
    c.eval.num_heldout_triples = 16
    c.eval.num_show = 4
    c.eval.gen_rtol = c.eval.gen_atol = 1e-3
  elif arg in ("mnist", "cifar10"):
    c.data.dataset = arg
    c.data.num_train = 64
    c.data.num_heldout = 2000
    c.model.widths = (64, 128, 256) if arg == "cifar10" else (32, 64, 128)
    c.model.num_res_blocks = 2
    c.model.time_dim = 64
    c.model.attention = True
    c.model.groups = 32
    c.model.conv = "lax"
    c.train.steps = 40000
    c.train.batch_size = 128
    c.train.lr = 2e-4
    c.train.ema_decay = 0.9999
    c.posterior.num_triples = 256
    c.x64 = True
    c.posterior.num_posterior = 16
    c.eval.num_gen = 256
    c.posterior.etas = (0.05, 0.1, 0.2, 0.4)
    c.posterior.geo_max_steps = 1024
  elif arg != "digits":
    raise ValueError(
      f"unknown config variant {arg!r}; use 'digits', 'mnist', 'cifar10' or 'smoke'."
    )
  return c
