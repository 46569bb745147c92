"""Config of ``experiments/laplace/two_point_1d.py`` (the ``make demo`` default).

Variants (``--config=experiments/laplace/configs/two_point_1d.py:VARIANT``): ``""`` (default)
and ``smoke`` (tiny, for the test suite).
"""

import ml_collections

from experiments import configs_common as cc


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg)
  c = cc.base()  # default workdir: runs/two_point_1d/<timestamp>

  c.data = ml_collections.ConfigDict()
  c.data.m = 1.0  # training set {-m, +m}
  c.data.target_std = 0.1  # target GMM ½N(-m, s²) + ½N(m, s²) for the KL

  # MAP (flow matching).
  c.model = cc.mlp_model((32, 32, 32), time_dim=16)
  c.train = cc.adam_train(4000, 256, ema_decay=0.999, checkpoint_dir="")

  # Curvature loss on frozen triples over all parameters (select "" for the toy; e.g. "dense_0"
  # for a subset), each triple one observation (loss_scale 1: batch-sum loss); the posterior
  # samples of every sampler of laplace.SAMPLERS get the same v (paired).
  c.posterior = cc.laplace_posterior(
    select="",
    num_triples=256,
    etas=(0.02, 0.05, 0.1, 0.2),
    num_posterior=16,
    geo_rtol=1e-6,
    geo_atol=1e-8,
    geo_max_steps=2048,
  )

  # Generation and evaluation; field_eta: the η shown in the velocity-field panels.
  c.eval = cc.laplace_eval(
    num_gen=256,
    gen_rtol=1e-5,
    gen_atol=1e-5,
    num_heldout_triples=4096,
    kde_bandwidth=0.05,
    field_eta=0.2,
  )

  if arg == "smoke":
    c.model.update(hidden=(8, 8), time_dim=8)
    c.train.update(steps=100, batch_size=32)
    c.posterior.update(num_triples=32, lanczos_k=4, etas=(0.05, 0.2), num_posterior=3)
    c.eval.update(field_eta=0.2, num_gen=32, num_heldout_triples=128)
  return c
