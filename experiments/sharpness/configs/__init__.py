"""Configs of the sharpness experiments: ``get_config(variant)`` per experiment, and the sections
they share (:func:`sail_section`, :func:`shrink_sail`)."""

import ml_collections

# Stable Diffusion v1's DDIM set-up whose FIRST step fixes the detection time of the sharpness
# experiments by noise-to-signal ratio (experiments.sharpness.pipeline.detection_time): 1000
# scaled-linear betas in [0.00085, 0.012], 50 DDIM steps with offset 1 → first timestep k = 981,
# ᾱ_k = 0.00578, ψ/σ = 0.0762 → linear-FM t = 1/(1 + σ/ψ) = 0.0708 (whatever num_steps is).
SD_FIRST_STEP = dict(
  beta_start=0.00085, beta_end=0.012, train_steps=1000, inference_steps=50, steps_offset=1
)


def sail_section(**fields) -> ml_collections.ConfigDict:
  """The ``sail`` section every sharpness experiment uses (chosen once, before the runs).

  SAIL's official objective (``memjax.sharpness.sail``, ``objective="official"``) with α = 0.05
  (SD v1 code), Adam lr 0.05, rounds of 10 steps with non-accepted latents re-seeded, threshold
  0.75 × the median plain-noise loss rising by 1.25 % every 3 rounds (code: +0.1 on 8.2), 200
  steps = 20 rounds. ``fields`` (e.g. ``t_s``) come right after ``objective``.
  """
  return ml_collections.ConfigDict(
    dict(
      objective="official",
      direction="eps",
      **fields,
      alpha=0.05,
      threshold_rel=0.75,
      threshold_rise=0.0125,
      rounds_per_rise=3,
      steps_per_round=10,
      lr=0.05,
      max_iters=200,
    )
  )


def shrink_sail(section: ml_collections.ConfigDict) -> None:
  """Smoke size of a ``sail`` section: 2 rounds of 3 steps, threshold 1.0 × the plain-noise loss
  (some latents accepted at once)."""
  section.update(max_iters=6, steps_per_round=3, threshold_rel=1.0)
