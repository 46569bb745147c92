"""Config of ``experiments/laplace/toy_2d.py``: LA vs RLA on a 2D mixture with few training points.

Built on :mod:`experiments.laplace.configs.two_point_1d` (same posterior and evaluation settings:
subspace posterior, refined θ*, two triple draws, the papers' squared criterion on the c grid
without 1); variants ``""`` (default) and ``smoke``. The held-out FM loss and the baseline M_c
use the ``num_test`` fresh samples of the true mixture.
"""

import ml_collections

from experiments.laplace.configs import two_point_1d


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = two_point_1d.get_config(arg)
  for name in ("kde_bandwidth", "field_eta", "kl_target_stds", "num_heldout_samples"):
    del c.eval[name]
  c.data = ml_collections.ConfigDict()
  c.data.num_modes = 8
  c.data.radius = 2.0
  c.data.std = 0.3
  c.data.num_train = 12  # few points: the MAP memorises
  c.data.num_test = 2000  # fresh points from the true mixture (held-out loss, baseline, quality)
  if arg != "smoke":
    c.model.hidden = (64, 64, 64)
    c.model.time_dim = 16
    c.train.steps = 6000
    # η grid by the rule of two_point_1d's config (×4 from η = 1 until the Euclidean held-out
    # FM loss first exceeds 3× the MAP's). Pilot (Euclidean only, 8 samples, MAP 9.04):
    # η = 1, 4, 16, 64 gave 1.00×, 1.01×, 1.19×, 3.9×, so the grid stops at 64.
    c.posterior.etas = (1.0, 4.0, 16.0, 64.0)
    c.posterior.num_posterior = 8
    c.eval.num_gen = 256
  return c
