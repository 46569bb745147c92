r"""Sharpness detection and SAIL on a class-conditional, memorising digits model.

Training set (:func:`memjax.data.duplicated_digits`): label 0 = many distinct images of one digit
(generalised); label 1 = a few distinct images of another digit plus ONE image repeated ~100×.
A :class:`memjax.nets.CondMLPField` is trained by conditional FM with label dropout 0.2 and
sampled with classifier-free guidance (scale 5) by Euler steps. Samples with ``d1/d2 ≤ 1/3``
against the distinct training images are memorised (the papers' squared criterion
``d1² ≤ c d2²``). Detectors at the fixed detection time matched by σ/ψ to SD's first DDIM step
(:func:`experiments.sharpness.pipeline.detection_time`, FM ``t ≈ 0.071``; the sampler's state
there): Wen et al. ``||ε̂(x,c) − ε̂(x,∅)||``, its velocity analogue and ``||H^Δ s^Δ||²``, ranked
PER SAMPLE (n = 1, both labels pooled) and within label 1 — the per-prompt protocol is
``experiments/sharpness/detection.py``. SAIL (label-1 noise, :func:`memjax.sharpness.sail`,
official objective ``||s^Δ(y + ŝ^Δ)|| + α||x||`` at the on-distribution state ``y`` the guided
sampler reaches at ``t_s`` from ``x``, rounds with re-seeding, threshold relative to the
plain-noise loss); non-converged latents are discarded and counted; M_c and a quality proxy (mean
distance to the nearest HELD-OUT image of the class) are compared with plain noise::

  python -m experiments.sharpness.digits --config=experiments/sharpness/configs/digits.py
  python -m experiments.sharpness.digits --config=experiments/sharpness/configs/digits.py:smoke \
      --config.workdir=/tmp/x
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common, plotting
from experiments.sharpness import pipeline
from memjax import data, memorisation, metrics, neighbours, paths, sharpness, training

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "digits.py")

FIGURE = "sharpness_digits.png"
DIM = 64  # flattened 8×8 digits
NUM_CLASSES = 2  # label 0 (generalised) and 1 (duplicated image)


def plot(path, ts, prof, mem, det_scores, sail_losses, plain, sailed):
  fig = plt.figure(figsize=(18, 4.6))
  a = fig.add_subplot(1, 4, 1)
  for sel, name, col in plotting.memorisation_groups(mem):
    a.plot(
      ts,
      np.median(np.asarray(prof.bottom[:, sel, 0]), 1),
      "o-",
      color=col,
      label=f"λ_min, {name}",
    )
    a.plot(
      ts,
      np.median(-np.asarray(prof.trace[:, sel]), 1) / DIM,
      "s--",
      color=col,
      label=f"−tr H / D, {name}",
    )
  a.set(xlabel="t (data at 1)", yscale="symlog", title="conditional Hessian, ½(H+Hᵀ)")
  a.legend(fontsize=7)
  plotting.roc_panel(fig.add_subplot(1, 4, 2), det_scores, mem, "ROC, first sampling step")
  a = fig.add_subplot(1, 4, 3)
  a.semilogy(np.asarray(sail_losses).T, color="C2", alpha=0.3, lw=0.8)
  a.set(xlabel="Adam iteration", ylabel="L(x_T)", title="SAIL trajectories (label 1)")
  for j in range(8):
    for row, imgs in enumerate((plain, sailed)):
      b = fig.add_subplot(4, 32, 25 + j + 32 * row * 2)
      b.imshow(np.asarray(imgs[j]).reshape(8, 8), cmap="gray", vmin=-1, vmax=1)
      b.axis("off")
  fig.suptitle("right: label-1 samples from plain noise (top) and SAIL noise (bottom)", fontsize=9)
  plotting.save(fig, path, tight=False)


def run_sail(cfg, cs, null, gen, x0, unique, dd, guided_point, t_det, key):
  """SAIL on label-1 noise ``x0 (n, 64)``; returns ``((samples, SailResult), summary dict)``.

  ``g = s^Δ(·, t_s, 1)`` at ``state_fn(x)``, the guided Euler state at ``t_s`` (``t_s = None``:
  the detection time ``t_det``). Non-converged latents are discarded for ``M_c_sail``
  (``M_c_sail_all`` keeps them)."""
  S, mem_c = cfg.sail, cfg.detect.mem_c
  t_s = float(t_det if S.get("t_s", None) is None else S.t_s)
  tt = jnp.asarray(t_s, x0.dtype)
  g = lambda x: sharpness.score_delta(cs, x, tt, 1, null)
  state_fn = pipeline.state_map(guided_point, t_s, cfg.sample.num_steps)
  res, sail_seconds = pipeline.sail(g, x0, S, state_fn=state_fn, key=key)
  y1 = jnp.ones((x0.shape[0],), jnp.int32)
  conv = np.asarray(res.converged)
  sail_all = gen(res.x, y1)[-1]
  # Quality and M_c_sail on ACCEPTED latents only (the others are discarded, and counted).
  outs = {"plain": gen(x0, y1)[-1], "sail": sail_all[conv] if conv.any() else sail_all}
  held = jnp.asarray(dd.held_out[1])
  r = {k: np.asarray(memorisation.nn_ratio(s, unique)) for k, s in outs.items()}
  dup = jnp.asarray(dd.dup_image)[None]
  summary = {
    "t_s": t_s,
    "t_s_rule": "detection time (sigma/psi of SD's first DDIM step)"
    if S.get("t_s", None) is None
    else "fixed",
    "seconds": sail_seconds,
    "M_c_plain": float(np.mean(r["plain"] <= mem_c)),
    "M_c_sail": float(np.mean(r["sail"] <= mem_c)) if conv.any() else float("nan"),
    "M_c_sail_all": float(np.mean(np.asarray(memorisation.nn_ratio(sail_all, unique)) <= mem_c)),
    "quality_mean_dist_to_nearest_heldout": {
      k: float(jnp.mean(neighbours.nearest_two(s, held).d1)) for k, s in outs.items()
    },
    "mean_dist_to_duplicated_image": {
      k: float(jnp.mean(jnp.linalg.norm(s - dup, axis=1))) for k, s in outs.items()
    },
    **pipeline.sail_stats(res, x0),
  }
  return (sail_all, res), summary


def _profile(cs, path_t, ts, key, n, k, num_iters):
  """Sharpness profile of each label's half of ``path_t (T, 2n, D)``, concatenated over samples."""
  parts = []
  for c in range(NUM_CLASSES):
    score = lambda x, t, c=c: cs(x, t, c)
    prof = jax.jit(
      lambda xs, kk, score=score: sharpness.sharpness_profile(
        score, xs, ts, kk, k=k, num_iters=num_iters
      )
    )
    parts.append(prof(path_t[:, c * n : (c + 1) * n], jax.random.fold_in(key, c)))
  return sharpness.Profile(*(jnp.concatenate(p, 1) for p in zip(*parts)))


# Closing lines of the CLI, ``SUMMARY.format_map(results)``: memorised fractions, first-step
# detection and the SAIL summary.
SUMMARY = (
  "memorised {memorised_fraction}; detection at {detection_time}: {detection_first_step}\n"
  "within label 1: {detection_within_label_1}\nSAIL: {sail}"
)


@common.float32
def run(cfg, workdir: str) -> dict:
  """Fit, sample with guidance, detect at the first step, profile, run SAIL; write results."""
  k_data, k_fit, k_noise, k_prof = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)
  D, Smp, P = cfg.data, cfg.sample, cfg.detect
  dd = data.duplicated_digits(
    k_data, D.general_class, D.dup_class, D.n_general, D.n_dup_class_distinct, D.copies
  )
  with common.Timer() as t_fit:
    u, null, params, losses = pipeline.fit_conditional(dd.x, dd.y, NUM_CLASSES, cfg, k_fit)
  guided = training.cfg_velocity(u, Smp.guidance, null)
  sched = paths.linear_fm()
  n = Smp.num_samples_per_class
  y = jnp.repeat(jnp.arange(NUM_CLASSES), n)
  x0 = jax.random.normal(k_noise, (NUM_CLASSES * n, DIM), jnp.float32)
  gen = jax.jit(
    lambda x, yy: pipeline.euler_path(lambda z, t: guided(params, z, t, yy), x, Smp.num_steps)
  )
  path = gen(x0, y)
  unique = jnp.asarray(dd.unique)
  mem = np.asarray(memorisation.nn_ratio(path[-1], unique) <= P.mem_c)
  field = functools.partial(u, params)
  cs = paths.point_cond_fn(field, sched, "velocity", "score")
  epsf = paths.point_cond_fn(field, sched, "velocity", "eps")
  uf = lambda x, t, c: field(x[None], t[None], jnp.asarray(c)[None])[0]
  det_time = pipeline.detection_time(P)
  t1 = jnp.asarray(det_time["t"], x0.dtype)
  # The sampler's state at t_detect from the same noise (Euler, ~1/num_steps steps up to it).
  x1 = jax.jit(
    lambda x: pipeline.split_path(
      lambda z, t: guided(params, z, t, y), x, det_time["t"], Smp.num_steps
    )[pipeline.split_index(det_time["t"], Smp.num_steps)]
  )(x0)
  per_point = lambda metric: np.asarray(jax.vmap(lambda x, c: metric(x, t1, c, null))(x1, y))
  det_scores = {
    "hs_detector": per_point(functools.partial(sharpness.hs_detector, cs)),
    "wen_eps": per_point(functools.partial(sharpness.wen_metric, epsf)),
    "wen_velocity": per_point(functools.partial(sharpness.wen_metric, uf)),
  }
  idx = np.rint(np.asarray(P.t_grid) * Smp.num_steps).astype(int)
  ts = jnp.asarray(idx / Smp.num_steps, x0.dtype)
  # Spectra of the conditional score's Hessian along the trajectories (label of each sample).
  with common.Timer() as t_prof:
    prof = _profile(cs, path[idx], ts, k_prof, n, P.k, P.lanczos_iters)
  prof_scores = pipeline.profile_scores(prof)
  det = {name: metrics.detection_report(s, mem) for name, s in det_scores.items()}
  lab1 = np.asarray(y) == 1
  within_label1 = {
    name: metrics.detection_report(s[lab1], mem[lab1]) for name, s in det_scores.items()
  }
  label_only = metrics.detection_report(np.asarray(y, float), mem)
  det.update(
    {
      f"{name}_t{float(t):g}": metrics.detection_report(s[i], mem)
      for name, s in prof_scores.items()
      for i, t in enumerate(ts)
    }
  )
  y1 = jnp.ones((1,), jnp.int32)
  guided_point = lambda z, t: guided(params, z, t, y1[: z.shape[0]])
  (sailed, sail_res), sail_out = run_sail(
    cfg,
    cs,
    null,
    gen,
    x0[n:],
    unique,
    dd,
    guided_point,
    det_time["t"],
    jax.random.fold_in(k_noise, 1),
  )
  results = {
    "config": cfg.to_dict(),
    "train_seconds": t_fit.seconds,
    "profile_seconds": t_prof.seconds,
    "final_train_loss": float(np.mean(losses[-200:])),
    "num_train": int(len(dd.x)),
    "num_distinct_train": int(len(dd.unique)),
    "memorised_fraction": {
      "all": float(mem.mean()),
      "label_0": float(mem[:n].mean()),
      "label_1": float(mem[n:].mean()),
      # The same criterion on held-out real images of each class: the label's chance floor.
      "baseline_M_c_heldout": {
        f"label_{c}": float(
          np.mean(np.asarray(memorisation.nn_ratio(jnp.asarray(dd.held_out[c]), unique)) <= P.mem_c)
        )
        for c in range(NUM_CLASSES)
      },
    },
    "protocol": "per sample (n = 1), both labels pooled; see sharpness.detection for per-prompt",
    "detection_time": det_time,
    "detection_first_step": {k: det[k] for k in det_scores},
    "detection_within_label_1": within_label1,
    "detection_by_label_alone": label_only,
    "detection_profile_over_t": det,
    "sail": sail_out,
  }
  plot(
    os.path.join(workdir, FIGURE),
    np.asarray(ts),
    prof,
    mem,
    det_scores,
    sail_res.losses,
    path[-1][n:],
    sailed,
  )
  return common.save_results(workdir, results)


if __name__ == "__main__":
  common.main(run, CONFIG, SUMMARY, FIGURE)
