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
  """The ``sail`` section every sharpness experiment uses (protocol fixed before the runs of
  issue 27; experiments.sharpness.pipeline.sail_arms / sail_settings implement it).

  * Objective: the released loss ``||g(y + δ ĝ(y))|| + α||x||`` (``objective="official"``) with
    ``g`` the ε-DIFFERENCE ``ε̂(y, c) − ε̂(y, ∅) = −σ_t s^Δ`` (``direction="eps"``, as the released
    SD code; ``"score"`` = ``g = s^Δ``, the form memjax ran before, kept as the ``sail_score`` arm).
  * State: ``state="initial"``: ``g`` is evaluated at ``y = (1 − t_s) x``, the initial latent
    placed at the noise level of the SNR-matched time ``t_s`` (the released code scores the initial
    latent at SD's first timestep); ``"euler"``: after the guided Euler steps to ``t_s``.
  * Settings (``settings="sd_scaled"``, dimension-aware; rule fixed before running): SD v1's
    numbers rescaled to the latent dimension ``D`` — ``δ = √(D/16384)`` (SD's unit step is 1/128 of
    ``||x_T|| ≈ 128``; the same fraction here); the sharpness allowance ``τ = threshold_rel ×`` the
    median sharpness term ``S = ||g(y + δĝ)||`` of the plain noise being optimised (SD: 1.8 = 8.2 −
    0.05·128); ``α = 3.56 τ/√D`` so that the prior term at the typical radius is 3.56× the
    allowance, as in SD (6.4 vs 1.8); threshold ``α√D + τ`` rising ``0.1 τ/1.8`` every 3 rounds
    (SD: 8.2 + 0.1 every 3 failed rounds). ``alpha_rule="fluctuation"`` (added after the first
    outcome runs showed the value rule makes acceptance mostly a test of ``||x||`` at small D):
    ``α = 0.05 τ/1.8``, so that the spread of ``α||x||`` over draws (``≈ α/√2`` in any D) is the
    same fraction of the allowance as in SD (0.035 vs 1.8). ``"relative"``: memjax's earlier rule
    (α = 0.05, δ = 1, threshold 0.75 × the median plain-noise loss rising 1.25 % per 3 rounds);
    ``"absolute"``: SD's raw 8.2 / +0.1 / α = 0.05 / δ = 1.
  * Rounds: Adam lr 0.05, 10 steps per round, non-accepted latents re-seeded, 200 steps in all.
  * Arms on the same plain noise: ``sail`` (ε-difference), ``sail_score`` (``g = s^Δ``),
    ``sail_shell`` (ε-difference, iterates projected onto ``||x|| = √D``), ``rejection`` (no
    gradients: plain noise re-drawn until the ``sail`` arm's loss is under the same threshold
    schedule, at EQUAL compute: an Adam step costs ``step_cost = 3`` loss evaluations — forward +
    reverse pass ≈ 3 forwards — so the draw budget is 600 and a round is 30 draws).
  ``fields`` (e.g. ``t_s``) come right after ``direction``.
  """
  return ml_collections.ConfigDict(
    dict(
      objective="official",
      direction="eps",
      **fields,
      settings="sd_scaled",
      alpha_rule="value",
      state="initial",
      alpha=0.05,
      delta=1.0,
      threshold_rel=0.75,
      threshold_rise=0.0125,
      rounds_per_rise=3,
      steps_per_round=10,
      lr=0.05,
      max_iters=200,
      step_cost=3,
      arms=("sail", "sail_score", "sail_shell", "rejection"),
    )
  )


def shrink_sail(section: ml_collections.ConfigDict) -> None:
  """Smoke size of a ``sail`` section: 2 rounds of 3 steps, threshold 1.0 × the plain-noise
  sharpness term (some latents accepted at once)."""
  section.update(max_iters=6, steps_per_round=3, threshold_rel=1.0)
