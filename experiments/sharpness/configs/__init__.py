"""Configs of the sharpness experiments: ``get_config(variant)`` per experiment."""

# Stable Diffusion v1's DDIM set-up whose FIRST step fixes the detection time of the sharpness
# experiments by noise-to-signal ratio (experiments.sharpness.pipeline.detection_time): 1000
# scaled-linear betas in [0.00085, 0.012], 50 DDIM steps with offset 1 → first timestep k = 981,
# ᾱ_k = 0.00578, ψ/σ = 0.0762 → linear-FM t = 1/(1 + σ/ψ) = 0.0708 (whatever num_steps is).
SD_FIRST_STEP = dict(
  beta_start=0.00085, beta_end=0.012, train_steps=1000, inference_steps=50, steps_offset=1
)
