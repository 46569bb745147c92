"""Config of ``experiments/sharpness/digits.py``; variants ``""`` (default) and ``smoke``."""

import ml_collections

from experiments import configs_common as cc
from experiments.sharpness.configs import SD_FIRST_STEP, sail_section, shrink_sail


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = cc.variant(arg)
  c = cc.base()

  # Label 0: n_general distinct images of general_class (generalised); label 1: a few distinct
  # images of dup_class + one image repeated `copies` times (memjax.data.duplicated_digits).
  c.data = ml_collections.ConfigDict(
    dict(general_class=0, dup_class=1, n_general=150, n_dup_class_distinct=20, copies=100)
  )
  c.model = cc.mlp_model((256, 256, 256))
  # Conditional FM with label dropout p_uncond (for classifier-free guidance).
  c.train = cc.adam_train(10000, 128, p_uncond=0.2)
  # Guided Euler sampling.
  c.sample = ml_collections.ConfigDict(dict(num_samples_per_class=200, num_steps=50, guidance=5.0))
  # Memorised when d1² <= mem_c d2² (papers' squared criterion); Hessian spectra (k Lanczos pairs)
  # along t_grid. Detectors at t_detect: None → σ/ψ of SD v1's first DDIM step (FM t ≈ 0.0708, see
  # configs/__init__.py), not t_1 = 1/num_steps.
  c.detect = ml_collections.ConfigDict(
    dict(
      mem_c=1 / 3,
      t_grid=(0.02, 0.2, 0.5, 0.8),
      k=3,
      lanczos_iters=16,
      t_detect=None,
      sd=SD_FIRST_STEP,
      # "initial": score (1 − t) x0, the initial noise at the noise level of t_detect (as SD
      # scores its initial latent); "euler": the state after the guided Euler steps.
      state="initial",
    )
  )
  # SAIL (configs/__init__.py sail_section, protocol fixed before the issue-27 runs): ε-difference
  # g at (1 − t_s) x with t_s the detection time, SD-scaled δ, α and threshold, arms sail /
  # sail_score / sail_shell / rejection (equal compute) on the label-1 noise.
  c.sail = sail_section(t_s=None)
  # Quality of the SAIL arms: digits-FD / precision / recall of experiments.laplace.quality's
  # classifier features (variant "" | "smoke"; cache "" = its default), k of precision / recall.
  c.quality = ml_collections.ConfigDict(dict(enabled=True, classifier="", cache_dir="", k=3))

  if arg == "smoke":
    c.data.update(n_general=40, n_dup_class_distinct=5, copies=20)
    cc.shrink_mlp(c, (32, 32), steps=200, batch_size=32)
    c.sample.update(num_samples_per_class=24, num_steps=10, guidance=1.0)
    # mem_c: both classes present so the smoke detector numbers are finite.
    c.detect.update(mem_c=0.97, t_grid=(0.1, 0.5), k=1, lanczos_iters=4)
    shrink_sail(c.sail)
    c.quality.classifier = "smoke"
  return c
