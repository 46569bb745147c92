"""Config of ``experiments/sharpness/outcome.py``; variants ``""`` (digits), ``toy``, ``smoke``
(digits smoke) and ``toy_smoke``.

Protocol, fixed before the issue-27 runs: 3 seeds (each retrains the model); the experiment's own
default config (its ``sail`` section: configs/__init__.py ``sail_section``, SD-scaled settings);
95 % bootstrap CIs with ``bootstrap`` resamples over seeds and samples within; the verdict rule of
:func:`experiments.sharpness.outcome.verdict` — an arm beats the rejection control only when the
paired CI of ``M_c(arm) − M_c(rejection)`` lies below 0 AND its quality is not worse (toy: paired
CI of the NN-distance difference not above 0; digits: digits-FD higher than the control's on at
most one seed and by < 10 % on average).
"""

import ml_collections

from experiments import configs_common as cc


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg, ("", "smoke", "toy", "toy_smoke"))
  c = cc.base()
  c.experiment = "toy" if arg.startswith("toy") else "digits"
  c.variant = "smoke" if arg in ("smoke", "toy_smoke") else ""
  c.seeds = (0, 1, 2)
  c.bootstrap = 500
  c.reuse = True  # reuse a seed's results.json + sail_arms.npz already in the workdir
  # M_c uses the experiment's own detect.mem_c (1/3 by default).
  # Overrides of the experiment's config, (dotted key, value) pairs; none by default.
  c.overrides = ()
  if arg == "toy":
    # Sized for a 2-core CPU (fixed before running): the toy's SAIL state is the Euler state at
    # t_s = 0.5, so every loss evaluation runs num_steps/2 Euler steps — 500 latents, a 40-step
    # sampler and 6 rounds (60 Adam steps; the control's budget is 180 draws).
    c.overrides = (("sample.num_samples", 500), ("sample.num_steps", 40), ("sail.max_iters", 60))
  if c.variant == "smoke":
    c.seeds = (0, 1)
    c.bootstrap = 20
  return c
