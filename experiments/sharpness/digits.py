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
``experiments/sharpness/detection.py``; detectors score the initial latent at the noise level of
that time, ``(1 − t) x0`` (``detect.state="euler"``: the guided Euler state). SAIL on label-1 noise
(:func:`experiments.sharpness.pipeline.sail_arms`, settings of ``configs/__init__.py``): the
released loss with the ε-difference ``g`` (``sail``), ``g = s^Δ`` (``sail_score``), iterates
projected onto ``||x|| = √D`` (``sail_shell``) and the rejection control (``rejection``: plain noise
re-drawn under the same loss and threshold, no gradients, equal compute), all from the same plain
noise; per arm on ACCEPTED latents: M_c, ``||x_T||²/D``, compute and quality (distance to the
nearest held-out image of the class; digits-FD / precision / recall of
:mod:`experiments.laplace.quality`'s classifier features on equal-size subsets). Per-sample arrays
go to ``sail_arms.npz`` for :mod:`experiments.sharpness.outcome`::

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
from experiments.laplace import quality
from experiments.sharpness import pipeline
from memjax import data, memorisation, metrics, neighbours, paths, sharpness, training

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "digits.py")

FIGURE = "sharpness_digits.png"
RAW = "sail_arms.npz"  # per-sample arrays of the SAIL arms, read by outcome.py
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


def equal_size_subsets(arms_x: dict, conv: dict, seed: int) -> tuple[dict, int]:
  """Accepted samples of every arm cut to one common size (a fixed random subset), so that FD and
  precision / recall compare sets of equal size."""
  m = min(int(np.sum(c)) for c in conv.values())
  rng = np.random.default_rng(seed)
  out = {}
  for k, x in arms_x.items():
    idx = np.flatnonzero(conv[k])
    out[k] = np.asarray(x)[np.sort(rng.permutation(idx)[:m])]
  return out, m


def run_sail(cfg, field, sched, null, gen, x0, unique, dd, guided_point, t_det, key, classifier):
  """Plain noise, every SAIL arm and the rejection control on label-1 noise ``x0 (n, 64)``.

  ``g`` = :func:`memjax.sharpness.sail_field` of ``s^Δ(·, t_s, 1)`` (``t_s = None``: the detection
  time) at ``cfg.sail.state`` (:func:`experiments.sharpness.pipeline.state_fn_of`); arms and their
  settings: :func:`experiments.sharpness.pipeline.sail_arms`. M_c, ``||x||²/D`` and quality on
  ACCEPTED latents (the others are discarded, and counted); digits-FD / precision / recall of the
  classifier features (:func:`experiments.laplace.quality.quality_report`) on equal-size subsets
  against the held-out images of the class. Returns ``(summary, raw)`` with ``raw`` the per-sample
  arrays (ratios, ``||x||²/D``, features) for the seed-level bootstrap of ``outcome.py``.
  """
  S, mem_c = cfg.sail, cfg.detect.mem_c
  t_s = float(t_det if S.get("t_s", None) is None else S.t_s)
  tt = jnp.asarray(t_s, x0.dtype)
  cs = paths.point_cond_fn(field, sched, "velocity", "score")
  sd = lambda y: sharpness.score_delta(cs, y, tt, 1, null)
  sigma = float(sched.sigma(tt))
  g_of = functools.lru_cache(None)(lambda d: sharpness.sail_field(sd, sigma, d))
  state_fn, n_state = pipeline.state_fn_of(S, t_s, guided_point, cfg.sample.num_steps)
  nfe = 4 + 2 * n_state  # two g evaluations (cond + uncond each), guided Euler steps
  arms = pipeline.sail_arms(S, g_of, x0, state_fn=state_fn, key=key, nfe_per_loss=nfe)
  y1 = jnp.ones((x0.shape[0],), jnp.int32)
  xs = {"plain": x0, **{k: a["x"] for k, a in arms.items()}}
  conv = {"plain": np.ones(x0.shape[0], bool), **{k: a["converged"] for k, a in arms.items()}}
  samples = {k: np.asarray(gen(x, y1)[-1]) for k, x in xs.items()}
  held = np.asarray(dd.held_out[1])
  ratios = {
    k: np.asarray(memorisation.nn_ratio(jnp.asarray(v), unique)) for k, v in samples.items()
  }
  sub, m = equal_size_subsets(samples, conv, cfg.seed)
  dup = jnp.asarray(dd.dup_image)[None]
  qual = {}
  for k, v in samples.items():
    acc = v[conv[k]] if conv[k].any() else v
    q = {
      "mean_dist_to_nearest_heldout": float(
        jnp.mean(neighbours.nearest_two(jnp.asarray(acc), jnp.asarray(held)).d1)
      ),
      "mean_dist_to_duplicated_image": float(
        jnp.mean(jnp.linalg.norm(jnp.asarray(acc) - dup, axis=1))
      ),
    }
    if classifier is not None and m > cfg.quality.k:
      rep = quality.quality_report(sub[k], held, classifier, k=cfg.quality.k)
      q.update({n: rep[n] for n in ("digits_fd", "precision", "recall", "confidence")})
      q["num_equal_size"] = m
    qual[k] = q
  plain_arm = {
    "x": x0,
    "converged": conv["plain"],
    "units": np.ones(x0.shape[0]),
    "seconds": 0.0,
    "settings": {},
    "stats": {},
    "nfe_per_loss": nfe,
  }
  summary = {
    "t_s": t_s,
    "t_s_rule": "detection time (sigma/psi of SD's first DDIM step)"
    if S.get("t_s", None) is None
    else "fixed",
    "state": S.get("state", "initial"),
    "network_evals_per_loss": nfe,
    "arms": {
      k: pipeline.arm_summary(plain_arm if k == "plain" else arms[k], ratios[k], mem_c, qual[k])
      for k in xs
    },
  }
  raw = {
    "ratio": ratios,
    "converged": conv,
    "sq_norm_over_D": {k: np.sum(np.asarray(x) ** 2, 1) / x0.shape[1] for k, x in xs.items()},
    "features": (
      {k: quality.features(classifier, v) for k, v in sub.items()} if classifier is not None else {}
    ),
    "heldout_features": quality.features(classifier, held) if classifier is not None else None,
    "units": {"plain": np.ones(x0.shape[0]), **{k: a["units"] for k, a in arms.items()}},
  }
  return (samples, arms), summary, raw


def _profile(cs, path_t, ts, key, n, k, num_iters):
  """Sharpness profile of each label's half of ``path_t (T, 2n, D)``, concatenated over samples."""
  # One program for every label (the label is traced), not one per label.
  prof = jax.jit(
    lambda xs, kk, c: sharpness.sharpness_profile(
      lambda x, t: cs(x, t, c), xs, ts, kk, k=k, num_iters=num_iters
    )
  )
  parts = []
  for c in range(NUM_CLASSES):
    parts.append(prof(path_t[:, c * n : (c + 1) * n], jax.random.fold_in(key, c), jnp.asarray(c)))
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
  # Detection state: "initial" (default, as SD) the initial noise at the noise level of t_detect,
  # (1 − t) x0; "euler": the sampler's state at t_detect after the guided Euler steps.
  x1 = pipeline.detection_state(
    P, x0, lambda z, t: guided(params, z, t, y), det_time["t"], Smp.num_steps
  )
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
  classifier = None
  if cfg.get("quality", None) is not None and cfg.quality.enabled:
    classifier = quality.load_classifier(
      quality.get_config(cfg.quality.classifier), cache_dir=cfg.quality.cache_dir or None
    )
  (sail_samples, sail_arms), sail_out, raw = run_sail(
    cfg,
    field,
    sched,
    null,
    gen,
    x0[n:],
    unique,
    dd,
    guided_point,
    det_time["t"],
    jax.random.fold_in(k_noise, 1),
    classifier,
  )
  np.savez(
    os.path.join(workdir, RAW),
    **{f"{part}/{k}": v for part, d in raw.items() if isinstance(d, dict) for k, v in d.items()},
    **(
      {"heldout_features": raw["heldout_features"]} if raw["heldout_features"] is not None else {}
    ),
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
    "detection_state": P.get("state", "initial"),
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
    sail_arms["sail"]["losses"] if "sail" in sail_arms else np.zeros((1, 1)),
    path[-1][n:],
    sail_samples["sail"],
  )
  return common.save_results(workdir, results)


if __name__ == "__main__":
  common.main(run, CONFIG, SUMMARY, FIGURE)
