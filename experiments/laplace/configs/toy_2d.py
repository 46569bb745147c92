"""Config of ``experiments/laplace/toy_2d.py``: LA vs RLA on a 2D mixture with few training points.

Built on :mod:`experiments.laplace.configs.two_point_1d` (same posterior and evaluation settings);
variants ``""`` (default) and ``smoke``.
"""

import ml_collections

from experiments.laplace.configs import two_point_1d


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = two_point_1d.get_config(arg)
  del c.eval["kde_bandwidth"], c.eval["field_eta"]
  c.data = ml_collections.ConfigDict()
  c.data.num_modes = 8
  c.data.radius = 2.0
  c.data.std = 0.3
  c.data.num_train = 12  # few points: the MAP memorises
  c.data.num_test = 2000  # fresh points from the true mixture (quality proxy)
  if arg != "smoke":
    c.model.hidden = (64, 64, 64)
    c.model.time_dim = 16
    c.train.steps = 6000
    c.posterior.etas = (0.02, 0.05, 0.1, 0.15)
    c.posterior.num_posterior = 8
    c.eval.num_gen = 256
  return c
