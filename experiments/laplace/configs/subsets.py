"""Config of ``experiments/laplace/subsets.py``: the frontier experiment's set-up plus ``subsets``.

Variants: ``digits`` (default: first, first_last, convs, all at η = 8 and 32) and ``smoke``.
"""

import ml_collections

from experiments import configs_common as cc
from experiments.laplace.configs import frontier


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg or "digits", ("digits", "smoke"))
  c = frontier.get_config(arg)
  c.subsets = ml_collections.ConfigDict()
  c.subsets.names = ("first", "first_last", "convs", "all")
  c.subsets.etas = (8.0, 32.0)
  # Lanczos per subset (others: posterior.lanczos_k / lanczos_iters): k = 50 beyond the first layer.
  c.subsets.lanczos_k = {"first_last": 50, "convs": 50, "all": 50}
  c.subsets.lanczos_iters = {"first_last": 130, "convs": 130, "all": 130}
  if arg == "smoke":
    c.posterior.samplers = ("euclidean",)  # geodesic cost is the frontier smoke test's
    c.subsets.names = ("first", "all")
    c.subsets.etas = (4.0,)
    c.subsets.lanczos_k = {"all": 4}
    c.subsets.lanczos_iters = {"all": 40}
  return c
