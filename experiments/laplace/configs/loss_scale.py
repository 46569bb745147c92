"""Config of ``experiments/laplace/loss_scale.py``: the frontier set-up over the loss scale ``s``.

Variants: ``digits`` (default; not run yet: ~5 scales × 2 η × Riemannian geodesics on the digits
UNet's first layer, expected ≈ 20–40 min on 2 cores) and ``smoke``.

Protocol (fixed before any run): scales ``"mean"`` (s = 1/B, the papers' L_FM), 1/8, 1/2,
``"sum"`` (s = 1, issue 16's frontier) and 4; α by the Laplace evidence at each scale; the tilt;
η ∈ {4, 16} in posterior standard deviations; Euclidean and Riemannian samples from the SAME
velocities; reported per cell: ``||θ − θ*||``, ``ΔL̃``, ``||v||`` and ``M_1/3`` with digits-FD.
"""

import ml_collections

from experiments import configs_common as cc
from experiments.laplace.configs import frontier


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg or "digits", ("digits", "smoke"))
  c = frontier.get_config(arg)
  c.posterior.samplers = ("euclidean", "riemannian")
  c.loss_scale = ml_collections.ConfigDict()
  c.loss_scale.scales = ("mean", 0.125, 0.5, "sum", 4.0)
  c.loss_scale.etas = (4.0, 16.0)
  if arg == "smoke":
    c.loss_scale.scales = ("mean", "sum")
    c.loss_scale.etas = (4.0,)
    c.posterior.evidence_probes = 0
  return c
