"""Config for ``experiments/images_memorisation.py``.

Variants (``--config=...images_memorisation.py:VARIANT``): ``digits`` (default; CPU, offline sklearn 8×8
digits), ``mnist`` / ``cifar10`` (GPU sizes; real ``tfds.data_source`` data, which must be prepared
beforehand on an offline machine) and ``smoke`` (tiny, for the test suite).
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = arg or "digits"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = ""
  c.progress = True
  c.dataset = "digits"           # digits | mnist | cifar10
  c.num_train = 16               # small training subset: the MAP memorises
  c.num_heldout = 512            # held-out images for the quality proxy
  c.classes = ()                 # () = all classes
  # UNet MAP (flow matching).
  c.widths = (16, 32)
  c.num_res_blocks = 1
  c.time_dim = 16
  c.attention = False
  c.groups = 8
  c.conv = "matmul"              # "matmul" on CPU (fast gradients in loops), "lax" on GPU
  c.steps = 3000
  c.batch_size = 64
  c.lr = 2e-3
  c.ema_decay = 0.999
  c.restore = ""                 # checkpoint directory of a finished run: skip training
  # Curvature loss L(θ_B) = s Σ_b ℓ_b + (α/2)||θ_B||² over the FIRST conv layer only.
  c.select = "['conv_in']"
  c.x64 = False                  # float64 posterior stage (2x slower on CPU); float32 is enough at rtol 1e-4
  c.num_triples = 32
  c.loss_scale = 1.0
  c.alpha = 1.0
  c.lanczos_k = 20
  # Posterior samples (paired: same z for every η, same x0 for every model).
  c.mode = "full"
  c.etas = (0.1, 0.3, 0.6)
  c.num_posterior = 4
  c.geo_solver = "tsit5"
  c.geo_rtol = 1e-4
  c.geo_atol = 1e-6
  c.geo_max_steps = 256
  # Generation and evaluation.
  c.num_gen = 32
  c.gen_solver = "tsit5"
  c.gen_rtol = 1e-3
  c.gen_atol = 1e-3
  c.num_heldout_triples = 128
  c.cs = (0.1, 0.2, 0.25, 1 / 3, 0.5, 0.75, 1.0)
  c.num_show = 12                # images per row of the figure grid
  if arg == "smoke":
    c.num_train = 8
    c.num_heldout = 64
    c.widths = (8,)
    c.time_dim = 8
    c.groups = 4
    c.steps = 60
    c.batch_size = 16
    c.num_triples = 16
    c.lanczos_k = 3
    c.etas = (0.1,)
    c.num_posterior = 2
    c.num_gen = 8
    c.num_heldout_triples = 16
    c.num_show = 4
    c.gen_rtol = c.gen_atol = 1e-3
  elif arg in ("mnist", "cifar10"):
    c.dataset = arg
    c.num_train = 64
    c.num_heldout = 2000
    c.widths = (64, 128, 256) if arg == "cifar10" else (32, 64, 128)
    c.num_res_blocks = 2
    c.time_dim = 64
    c.attention = True
    c.groups = 32
    c.conv = "lax"
    c.steps = 40000
    c.batch_size = 128
    c.lr = 2e-4
    c.ema_decay = 0.9999
    c.num_triples = 256
    c.x64 = True
    c.num_posterior = 16
    c.num_gen = 256
    c.etas = (0.05, 0.1, 0.2, 0.4)
    c.geo_max_steps = 1024
  elif arg != "digits":
    raise ValueError(f"unknown config variant {arg!r}; use 'digits', 'mnist', 'cifar10' or 'smoke'.")
  return c
