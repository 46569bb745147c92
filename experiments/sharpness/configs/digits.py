"""Config of ``experiments/sharpness/digits.py``; variants ``""`` (default) and ``smoke``."""

import ml_collections

from experiments import configs_common as cc


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
  # Guided Euler sampling; the "first sampling step" is t_1 = 1/num_steps.
  c.sample = ml_collections.ConfigDict(dict(num_samples_per_class=200, num_steps=50, guidance=5.0))
  # Memorised when d1/d2 <= mem_c; Hessian spectra (k Lanczos pairs) along t_grid.
  c.detect = ml_collections.ConfigDict(
    dict(mem_c=1 / 3, t_grid=(0.02, 0.2, 0.5, 0.8), k=3, lanczos_iters=16)
  )
  # SAIL: L(x) = ||s^Δ(x + δ s^Δ(x)) − s^Δ(x)||² + α||x||², s^Δ at t_s for label 1; per-sample
  # stop at L ≤ 1.0 (plain-noise median L ≈ 16.7, of which α||x||² ≈ 0.32; at t_s = 0.2,
  # δ = 0.05 the sharpness term was negligible).
  c.sail = ml_collections.ConfigDict(
    dict(t_s=0.5, alpha=0.005, delta=0.5, threshold=1.0, lr=0.05, max_iters=100)
  )

  if arg == "smoke":
    c.data.update(n_general=40, n_dup_class_distinct=5, copies=20)
    cc.shrink_mlp(c, (32, 32), steps=200, batch_size=32)
    c.sample.update(num_samples_per_class=24, num_steps=10, guidance=1.0)
    # mem_c: both classes present so the smoke detector numbers are finite.
    c.detect.update(mem_c=0.97, t_grid=(0.1, 0.5), k=1, lanczos_iters=4)
    c.sail.max_iters = 5
  return c
