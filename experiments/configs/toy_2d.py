"""Config for ``experiments/toy_2d.py``: LA vs RLA on a 2D mixture with few training points."""
from experiments.configs import two_point_1d


def get_config(arg: str | None = None):
  c = two_point_1d.get_config(arg)
  for k in ("m", "target_std", "kde_bandwidth", "field_eta"):
    del c[k]
  c.num_modes = 8
  c.radius = 2.0
  c.std = 0.3
  c.num_train = 12               # few points: the MAP memorises
  c.num_test = 2000              # fresh points from the true mixture (quality proxy)
  if arg != "smoke":
    c.hidden = (64, 64, 64)
    c.time_dim = 16
    c.steps = 6000
    c.etas = (0.02, 0.05, 0.1, 0.15)
    c.num_posterior = 8
    c.num_gen = 256
  return c
