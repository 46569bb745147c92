"""Config of ``experiments/sharpness/detection.py``; variants ``""`` (default) and ``smoke``."""

import ml_collections

from experiments import configs_common as cc
from experiments.sharpness.configs import SD_FIRST_STEP, sail_section, shrink_sail


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg)
  c = cc.base()

  # Prompts = conditioning labels. Memorised prompt j: ONE digit image (class j % 10) repeated
  # `copies`× (20/1600 = 1.25 % of the data each); normal prompt j: `per_normal` distinct images of
  # class j % 10 (disjoint from every other prompt's). Remaining images of each class are held out.
  c.data = ml_collections.ConfigDict(
    dict(num_mem_prompts=20, num_normal_prompts=20, copies=20, per_normal=60)
  )
  c.model = cc.mlp_model((256, 256, 256))
  # Conditional FM, label dropout p_uncond; a fixed step budget, set before looking at detection.
  c.train = cc.adam_train(12000, 256, p_uncond=0.2)
  # n = generations_per_prompt (the papers' n = 4), guided Euler sampling.
  c.sample = ml_collections.ConfigDict(dict(generations_per_prompt=4, num_steps=50, guidance=5.0))
  # Detection time: t_detect = None → the linear-FM time whose σ/ψ equals that of SD v1's first
  # DDIM step (k = 981 of 1000 scaled-linear betas, 50 steps, offset 1: ψ/σ = 0.0762), i.e.
  # t = 1/(1 + σ/ψ) ≈ 0.0708 by memjax.paths.time_at_noise_to_signal — fixed, not 1/num_steps.
  # mem_c: the papers' squared criterion d1² ≤ c d2² (reported per prompt group, not the label).
  c.detect = ml_collections.ConfigDict(
    dict(
      t_detect=None,
      sd=SD_FIRST_STEP,
      mem_c=1 / 3,
      # "initial": score (1 − t) x0 (as SD scores its initial latent); "euler": after guided steps.
      state="initial",
    )
  )

  # SAIL arms on the memorised prompts' noise (configs/__init__.py sail_section, fixed before the
  # issue-27 runs): ε-difference at (1 − t_s) x, t_s = t_detect, SD-scaled δ / α / threshold.
  c.sail = sail_section()

  if arg == "smoke":
    c.data.update(num_mem_prompts=4, num_normal_prompts=4, copies=5, per_normal=10)
    cc.shrink_mlp(c, (32, 32), steps=200, batch_size=32)
    c.sample.update(generations_per_prompt=2, num_steps=10, guidance=1.0)
    shrink_sail(c.sail)
  return c
