r"""Per-PROMPT memorisation detection on digits (the papers' protocol, with many labels).

Prompts are conditioning labels of a :class:`memjax.nets.CondMLPField`. Half the prompts are
*memorised by construction*: their only training image is one digit repeated ``copies``× (each a
small share of all data); the other half have ``per_normal`` distinct images of a digit class
(the ``j``-th prompt of each kind uses class ``j % 10``, so classes hold both kinds). Each prompt
generates ``n`` images with classifier-free guidance from fresh noise. Each detector (Wen et al.
``||ε̂(x,c) − ε̂(x,∅)||``, its velocity analogue, and the authors' ``||H^Δ s^Δ||`` — averaged
unsquared as in their code, ``hs_norm``, and squared as in the paper, ``hs_sq``) is evaluated at
the fixed, SNR-matched detection time (:func:`experiments.sharpness.pipeline.detection_time`) on
the initial latent at that noise level, ``(1 − t) x0`` (``detect.state="euler"``: the sampler's
state after the guided steps), averaged over the ``n`` generations
(:func:`memjax.sharpness.averaged_over_generations`) and prompts are ranked
(:func:`memjax.metrics.per_prompt_detection`). Also reported: the within-class AUROC (memorised vs
normal prompts of the same digit class, averaged over classes), the per-sample ranking (``n = 1``)
for contrast, and the measured memorised fraction of each group's generations. Toy numbers: not
comparable with Stable Diffusion's (64-dim pixels, an MLP, 40 prompts). SAIL's arms and the
rejection control run on the memorised prompts' noise (:func:`run_sail`)::

  python -m experiments.sharpness.detection --config=experiments/sharpness/configs/detection.py
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
from memjax import (
  data,
  memorisation,
  metrics,
  neighbours,
  paths,
  sampling,
  sharpness,
  training,
)

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "detection.py")

FIGURE = "sharpness_detection.png"
DIM = 64
DETECTORS = ("hs_norm", "hs_sq", "wen_eps", "wen_velocity")

WHAT_METRICS_REWARD = {
  "per_prompt_auroc": "ranking of prompts by the mean detector over n generations; rewards a "
  "detector whose prompt-level mean separates duplicated-image prompts from normal ones",
  "within_class_auroc": "the same ranking restricted to prompts of one digit class (2 vs 2 at "
  "the default), averaged over classes; removes the class identity as a shortcut",
  "per_sample_auroc": "ranking of single generations (n = 1, all prompts pooled), the old "
  "protocol; noisier, and pools prompts",
  "M_c": "fraction of generations with d1² ≤ c d2² against the distinct training images; for "
  "normal prompts it also counts close-but-new digits (see baseline_M_c_heldout)",
}


class PromptData:
  """Training set of the prompt design: ``x (N, 64)``, labels ``y (N,)``, ``unique`` images,
  prompt kinds ``is_mem (P,)``, digit class per prompt ``cls (P,)`` and held-out images."""

  def __init__(self, key, num_mem, num_normal, copies, per_normal):
    images, labels = data.load_digits(flatten=True)
    P = num_mem + num_normal
    self.cls = np.concatenate([np.arange(num_mem), np.arange(num_normal)]) % 10
    self.is_mem = np.arange(P) < num_mem
    pools = {}
    for c in range(10):
      idx = np.flatnonzero(labels == c)
      pools[c] = list(idx[np.asarray(jax.random.permutation(jax.random.fold_in(key, c), len(idx)))])
    xs, ys, uniq = [], [], []
    for p in range(P):
      pool = pools[self.cls[p]]
      take = 1 if self.is_mem[p] else per_normal
      if len(pool) <= take:
        raise ValueError(f"class {self.cls[p]} has too few images left for prompt {p}.")
      sel, pools[self.cls[p]] = pool[:take], pool[take:]
      img = images[sel]
      uniq.append(img)
      xs.append(np.repeat(img, copies, 0) if self.is_mem[p] else img)
      ys.append(np.full(len(xs[-1]), p, np.int32))
    self.x, self.y, self.unique = np.concatenate(xs), np.concatenate(ys), np.concatenate(uniq)
    held = np.concatenate([pools[c] for c in range(10)])
    self.held_out, self.held_cls = images[held], labels[held]
    self.num_prompts = P


def within_class(per_prompt, is_mem, cls) -> dict:
  """AUROC of memorised vs normal prompts within each digit class, and their mean."""
  out = {}
  for c in np.unique(cls):
    sel = cls == c
    if is_mem[sel].any() and (~is_mem[sel]).any():
      out[str(int(c))] = metrics.auroc(per_prompt[sel], is_mem[sel])
  vals = list(out.values())
  return {
    "mean": float(np.mean(vals)) if vals else float("nan"),
    "min": float(np.min(vals)) if vals else float("nan"),
    "per_class": out,
  }


def run_sail(cfg, pd, field, sched, null, t_det, x_mem, y_mem, guided, params, key):
  """Every SAIL arm and the rejection control on the memorised prompts' noise ``x_mem (M, 64)``
  with prompts ``y_mem (M,)`` (:func:`experiments.sharpness.pipeline.sail_arms`, ``g`` the
  ε-difference of each latent's prompt at ``cfg.sail.state``). M_c and a quality proxy (mean NN
  distance to held-out images of the prompt's class) on ACCEPTED latents, per arm."""
  S, num_steps = cfg.sail, cfg.sample.num_steps
  tt = jnp.asarray(t_det, x_mem.dtype)
  cs = paths.point_cond_fn(field, sched, "velocity", "score")
  sigma = float(sched.sigma(tt))
  g_of = functools.lru_cache(None)(
    lambda d: (
      lambda y, c: sharpness.sail_field(
        lambda z: sharpness.score_delta(cs, z, tt, c, null), sigma, d
      )(y)
    )
  )
  if S.get("state", "initial") == "initial":
    state_fn, n_state = (lambda x, c: (1.0 - t_det) * x), 0
  else:
    n_state = pipeline.split_index(t_det, num_steps)

    def state_fn(x, c):
      f = lambda z, t: guided(params, z, t, jnp.full(z.shape[:1], c, jnp.int32))
      return sampling.euler_trajectory(f, x[None], n_state, 0.0, t_det)[-1, 0]

  nfe = 4 + 2 * n_state
  arms = pipeline.sail_arms(
    S, g_of, x_mem, state_fn=state_fn, key=key, cond=y_mem, nfe_per_loss=nfe
  )
  gen = jax.jit(
    lambda x: pipeline.split_path(lambda z, t: guided(params, z, t, y_mem), x, t_det, num_steps)[-1]
  )
  xs = {"plain": x_mem, **{k: a["x"] for k, a in arms.items()}}
  unique = jnp.asarray(pd.unique)
  cls = pd.cls[np.asarray(y_mem)]

  def quality(samples, sel):
    d = []
    for c in np.unique(cls[sel]):
      held = jnp.asarray(pd.held_out[pd.held_cls == c])
      d.append(np.asarray(neighbours.nearest_two(samples[sel & (cls == c)], held).d1))
    return float(np.mean(np.concatenate(d)))

  plain_arm = dict(x=x_mem, converged=np.ones(len(cls), bool), units=np.ones(len(cls)))
  plain_arm.update(seconds=0.0, settings={}, stats={}, nfe_per_loss=nfe)
  out = {}
  for k, x in xs.items():
    arm = plain_arm if k == "plain" else arms[k]
    samples = np.asarray(gen(x))
    conv = np.asarray(arm["converged"])
    r = np.asarray(memorisation.nn_ratio(jnp.asarray(samples), unique))
    sel = conv if conv.any() else np.ones_like(conv)
    q = {"mean_nn_dist_to_heldout_of_class": quality(samples, sel)}
    out[k] = pipeline.arm_summary(arm, r, cfg.detect.mem_c, q)
  return {
    "t_s": float(t_det),
    "num_latents": int(len(cls)),
    "network_evals_per_loss": nfe,
    "arms": out,
  }


def plot(path, per_prompt, is_mem, t_det):
  fig, ax = plt.subplots(1, 2, figsize=(10, 4.2))
  plotting.roc_panel(ax[0], per_prompt, is_mem, f"ROC over prompts (t = {t_det:.3f})")
  for i, s in enumerate(per_prompt.values()):
    for kind, sel, mk in (("memorised", is_mem, "o"), ("normal", ~is_mem, "x")):
      ax[1].scatter(
        np.full(sel.sum(), i) + 0.1 * (kind == "normal"),
        s[sel],
        marker=mk,
        s=14,
        color="C3" if kind == "memorised" else "C0",
        label=kind if i == 0 else None,
      )
  ax[1].set(
    xticks=range(len(per_prompt)),
    xticklabels=list(per_prompt),
    yscale="log",
    title="per-prompt score (mean over n)",
  )
  ax[1].legend(fontsize=7)
  plotting.save(fig, path)


SUMMARY = (
  "detection time {detection_time}\nper-prompt detection {per_prompt_detection}\n"
  "within-class AUROC {within_class_auroc}\nmemorised fraction {memorised_fraction}\n"
  "SAIL on the memorised prompts {sail_memorised_prompts}"
)


@common.float32
def run(cfg, workdir: str) -> dict:
  """Fit, generate n per prompt, score at the SNR-matched time, rank prompts; write results."""
  k_data, k_fit, k_noise = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
  D, Smp, P = cfg.data, cfg.sample, cfg.detect
  pd = PromptData(k_data, D.num_mem_prompts, D.num_normal_prompts, D.copies, D.per_normal)
  with common.Timer() as t_fit:
    u, null, params, losses = pipeline.fit_conditional(pd.x, pd.y, pd.num_prompts, cfg, k_fit)
  det_time = pipeline.detection_time(P)
  t_det = det_time["t"]
  n, num_p = Smp.generations_per_prompt, pd.num_prompts
  y = jnp.repeat(jnp.arange(num_p), n)  # prompt of each generation, prompt-major
  x0 = jax.random.normal(k_noise, (num_p * n, DIM), jnp.float32)
  guided = training.cfg_velocity(u, Smp.guidance, null)
  with common.Timer() as t_gen:
    path = jax.jit(
      lambda x: pipeline.split_path(lambda z, t: guided(params, z, t, y), x, t_det, Smp.num_steps)
    )(x0)
    path.block_until_ready()
  samples = path[-1]
  # Detection state: "initial" (default, as SD) (1 − t_det) x0; "euler": the guided Euler state.
  x_det = pipeline.detection_state(
    P, x0, lambda z, t: guided(params, z, t, y), t_det, Smp.num_steps
  )
  field = functools.partial(u, params)
  sched = paths.linear_fm()
  cs = paths.point_cond_fn(field, sched, "velocity", "score")
  epsf = paths.point_cond_fn(field, sched, "velocity", "eps")
  uf = lambda x, t, c: field(x[None], t[None], jnp.asarray(c)[None])[0]
  tt = jnp.asarray(t_det, jnp.float32)
  metric = {
    "hs_norm": lambda x, c: jnp.sqrt(sharpness.hs_detector(cs, x, tt, c, null)),
    "hs_sq": lambda x, c: sharpness.hs_detector(cs, x, tt, c, null),
    "wen_eps": lambda x, c: sharpness.wen_metric(epsf, x, tt, c, null),
    "wen_velocity": lambda x, c: sharpness.wen_metric(uf, x, tt, c, null),
  }
  xs_p = x_det.reshape(num_p, n, DIM)
  with common.Timer() as t_det_s:
    per_gen = {
      k: np.asarray(
        jax.jit(jax.vmap(lambda x, c, m=m: jax.vmap(lambda z: m(z, c))(x)))(xs_p, jnp.arange(num_p))
      )
      for k, m in metric.items()
    }  # (P, n) each
    per_prompt = {
      k: np.asarray(
        jax.jit(
          jax.vmap(lambda x, c, m=m: sharpness.averaged_over_generations(lambda z: m(z, c), x))
        )(xs_p, jnp.arange(num_p))
      )
      for k, m in metric.items()
    }
  for k in DETECTORS:  # the library average equals the mean of the per-generation norms
    np.testing.assert_allclose(per_prompt[k], per_gen[k].mean(1), rtol=1e-4)
  is_mem = pd.is_mem
  unique = jnp.asarray(pd.unique)
  r = np.asarray(memorisation.nn_ratio(samples, unique)).reshape(num_p, n)
  r_held = np.asarray(memorisation.nn_ratio(jnp.asarray(pd.held_out), unique))
  mem_gen = r <= P.mem_c
  results = {
    "config": cfg.to_dict(),
    "protocol": "per-prompt: mean of per-generation detector values over n generations, prompts "
    "ranked; labels = prompts built from ONE duplicated image (not the per-sample M_c label); "
    "hs_norm averages ||H^Δ s^Δ|| (the released code), hs_sq ||H^Δ s^Δ||² (the paper's equation)",
    "detection_state": P.get("state", "initial"),
    "stopping_rule": f"fixed {cfg.train.steps} Adam steps, chosen before any detection number",
    "what_each_metric_rewards": WHAT_METRICS_REWARD,
    "note": "toy numbers (64-dim digits, MLP, 40 prompts); not comparable with Stable "
    "Diffusion's as if alike",
    "train_seconds": t_fit.seconds,
    "generate_seconds": t_gen.seconds,
    "detect_seconds": t_det_s.seconds,
    "final_train_loss": float(np.mean(losses[-200:])),
    "num_train": int(len(pd.x)),
    "num_prompts": int(num_p),
    "num_memorised_prompts": int(is_mem.sum()),
    "duplicate_share_of_data": float(D.copies / len(pd.x)),
    "detection_time": det_time,
    "memorised_fraction": {
      "memorised_prompts": float(mem_gen[is_mem].mean()),
      "normal_prompts": float(mem_gen[~is_mem].mean()),
      "baseline_M_c_heldout": float(np.mean(r_held <= P.mem_c)),
      "mem_c": float(P.mem_c),
    },
    "per_prompt_detection": {
      k: metrics.per_prompt_detection(per_gen[k], is_mem) for k in DETECTORS
    },
    "within_class_auroc": {k: within_class(per_prompt[k], is_mem, pd.cls) for k in DETECTORS},
    "per_sample_detection_n1": {
      k: metrics.detection_report(per_gen[k].ravel(), np.repeat(is_mem, n)) for k in DETECTORS
    },
    "per_prompt_scores": {k: per_prompt[k].tolist() for k in DETECTORS},
    "prompt_is_memorised": is_mem.tolist(),
    "prompt_class": pd.cls.tolist(),
  }
  if cfg.get("sail", None) is not None:
    sel = np.repeat(is_mem, n)
    results["sail_memorised_prompts"] = run_sail(
      cfg,
      pd,
      field,
      sched,
      null,
      t_det,
      x0[sel],
      y[sel],
      guided,
      params,
      jax.random.fold_in(k_noise, 1),
    )
  plot(os.path.join(workdir, FIGURE), per_prompt, is_mem, t_det)
  return common.save_results(workdir, results)


if __name__ == "__main__":
  common.main(run, CONFIG, SUMMARY, FIGURE)
