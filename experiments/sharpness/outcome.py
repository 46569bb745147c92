r"""SAIL against the control it needs, over seeds: M_c, quality, typicality and compute per arm.

For each seed the experiment ``cfg.experiment`` (``experiments.sharpness.digits`` — class-
conditional digits, SAIL on the duplicated label's noise — or ``experiments.sharpness.toy``) is
run with ``seed = s`` (its model retrained), and its SAIL arms
(:func:`experiments.sharpness.pipeline.sail_arms`) are read back from its ``sail_arms.npz``:
``plain`` noise, ``sail`` (the released ε-difference direction), ``sail_score`` (``g = s^Δ``),
``sail_shell`` (ε-difference, iterates projected onto ``||x|| = √D``) and ``rejection`` (plain
noise re-drawn under the same loss and threshold, no gradients, equal compute budget). Per arm,
on ACCEPTED latents: ``M_c`` (``c = 1/3``), ``||x_T||²/D``, quality (digits: digits-FD and
precision / recall of :mod:`experiments.laplace.quality`'s classifier features on equal-size
subsets against held-out images of the class; toy: mean distance to the nearest fresh draw of
the true mixture) and compute (loss evaluations per latent; network evaluations). CIs: 95 %
bootstrap over seeds and, within each drawn seed, over samples; differences against the
rejection control are PAIRED by seed (the same seed draws for both arms)::

  python -m experiments.sharpness.outcome --config=experiments/sharpness/configs/outcome.py
  python -m experiments.sharpness.outcome --config=experiments/sharpness/configs/outcome.py:toy
"""

from __future__ import annotations

import importlib
import json
import os

import matplotlib.pyplot as plt
import numpy as np

from experiments import common, plotting
from memjax import metrics

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "outcome.py")

FIGURE = "sharpness_outcome.png"
ARM_ORDER = ("plain", "sail", "sail_score", "sail_shell", "rejection")


def _load(path: str) -> dict:
  """``sail_arms.npz`` as ``{part: {arm: array}}`` (plus ``heldout_features`` when present)."""
  out: dict = {}
  with np.load(path) as z:
    for key in z.files:
      part, _, arm = key.partition("/")
      if arm:
        out.setdefault(part, {})[arm] = np.asarray(z[key])
      else:
        out[part] = np.asarray(z[key])
  return out


def _per_sample(raw, arm, part):
  """Accepted-latent values of one per-sample quantity (all latents when none was accepted)."""
  conv = raw["converged"][arm].astype(bool)
  v = raw[part][arm]
  return v[conv] if conv.any() else v


def _boot(per_seed: list, num: int, rng, stat=np.mean) -> tuple[float, list]:
  """Seed-mean of ``stat`` and its bootstrap CI: seeds with replacement, samples within."""
  point = float(np.mean([stat(v) for v in per_seed]))
  reps = []
  for _ in range(num):
    seeds = rng.integers(0, len(per_seed), len(per_seed))
    reps.append(
      np.mean(
        [stat(per_seed[s][rng.integers(0, len(per_seed[s]), len(per_seed[s]))]) for s in seeds]
      )
    )
  return point, [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]


def _boot_paired(a: list, b: list, num: int, rng, stat=np.mean) -> tuple[float, list]:
  """Seed-mean of ``stat(a) − stat(b)`` with seeds drawn jointly (paired), samples within each."""
  point = float(np.mean([stat(x) - stat(y) for x, y in zip(a, b)]))
  reps = []
  for _ in range(num):
    seeds = rng.integers(0, len(a), len(a))
    d = []
    for s in seeds:
      xa, xb = a[s], b[s]
      d.append(
        stat(xa[rng.integers(0, len(xa), len(xa))]) - stat(xb[rng.integers(0, len(xb), len(xb))])
      )
    reps.append(np.mean(d))
  return point, [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]


def fd_fast(feats, held_mu, held_cov, held_sqrt) -> float:
  """Fréchet distance of ``feats`` to a Gaussian with precomputed mean, covariance and
  ``cov^{1/2}`` (plain numpy eigh; the formula of :func:`memjax.metrics.frechet_distance`, which
  the tests compare it with), for the bootstrap's thousands of resamples."""
  mu = feats.mean(0)
  cov = np.cov(feats, rowvar=False)
  m = held_sqrt @ cov @ held_sqrt
  ev = np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0, None)
  fd = np.sum((mu - held_mu) ** 2) + np.trace(cov) + np.trace(held_cov) - 2 * np.sum(np.sqrt(ev))
  return float(max(fd, 0.0))


def held_stats(held):
  """``(mean, covariance, covariance^{1/2})`` of the held-out features (float64)."""
  held = np.asarray(held, np.float64)
  cov = np.cov(held, rowvar=False)
  w, v = np.linalg.eigh(0.5 * (cov + cov.T))
  return held.mean(0), cov, (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def aggregate(raws: list, results: list, cfg) -> dict:
  """Per arm and paired against the rejection control: point estimates and bootstrap CIs."""
  rng = np.random.default_rng(cfg.seed)
  nb = int(cfg.bootstrap)
  c = float(results[0]["config"]["detect"]["mem_c"])
  arms = [a for a in ARM_ORDER if a in raws[0]["ratio"]]
  mem = lambda r: np.mean(r <= c)
  per = {
    a: {
      "ratio": [_per_sample(r, a, "ratio") for r in raws],
      "sq": [_per_sample(r, a, "sq_norm_over_D") for r in raws],
      "units": [r["units"][a] for r in raws],
    }
    for a in arms
  }
  digits = "features" in raws[0]
  if digits:
    for a in arms:
      per[a]["feat"] = [r["features"][a] for r in raws]
  else:
    for a in arms:
      per[a]["nn"] = [_per_sample(r, a, "quality_nn") for r in raws]
  table = {}
  for a in arms:
    row = {}
    row["M_c"], row["M_c_ci"] = _boot(per[a]["ratio"], nb, rng, mem)
    row["sq_norm_over_D"], row["sq_norm_over_D_ci"] = _boot(per[a]["sq"], nb, rng)
    row["compute_loss_evals"] = float(np.mean([u.mean() for u in per[a]["units"]]))
    row["accepted_fraction"] = float(np.mean([r["converged"][a].mean() for r in raws]))
    row["M_c_per_seed"] = [float(mem(v)) for v in per[a]["ratio"]]
    if digits:
      fds = []
      for s, r in enumerate(raws):
        fds.append(metrics.frechet_distance(per[a]["feat"][s], r["heldout_features"]))
      row["digits_fd"] = float(np.mean(fds))
      row["digits_fd_per_seed"] = [float(v) for v in fds]
      # FD CI: seeds with replacement, features within (per seed against its own held-out set).
      hs = [held_stats(r["heldout_features"]) for r in raws]
      reps = []
      for _ in range(nb):
        ss = rng.integers(0, len(raws), len(raws))
        vals = []
        for s in ss:
          f = np.asarray(per[a]["feat"][s], np.float64)
          vals.append(fd_fast(f[rng.integers(0, len(f), len(f))], *hs[s]))
        reps.append(np.mean(vals))
      row["digits_fd_ci"] = [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]
      for q in ("precision", "recall"):
        vals = [res["sail"]["arms"][a]["quality"][q] for res in results]
        row[q] = float(np.mean(vals))
        row[f"{q}_per_seed"] = [float(v) for v in vals]
    else:
      row["nn_dist"], row["nn_dist_ci"] = _boot(per[a]["nn"], nb, rng)
    table[a] = row
  paired = {}
  if "rejection" in arms:
    for a in arms:
      if a == "rejection":
        continue
      d = {}
      d["M_c"], d["M_c_ci"] = _boot_paired(per[a]["ratio"], per["rejection"]["ratio"], nb, rng, mem)
      d["sq_norm_over_D"], d["sq_norm_over_D_ci"] = _boot_paired(
        per[a]["sq"], per["rejection"]["sq"], nb, rng
      )
      if not digits:
        d["nn_dist"], d["nn_dist_ci"] = _boot_paired(per[a]["nn"], per["rejection"]["nn"], nb, rng)
      else:
        d["digits_fd"] = table[a]["digits_fd"] - table["rejection"]["digits_fd"]
        d["digits_fd_per_seed"] = [
          x - y
          for x, y in zip(table[a]["digits_fd_per_seed"], table["rejection"]["digits_fd_per_seed"])
        ]
      paired[f"{a}_minus_rejection"] = d
  vs_plain = {}
  for a in arms:
    if a == "plain":
      continue
    d = {}
    d["M_c"], d["M_c_ci"] = _boot_paired(per[a]["ratio"], per["plain"]["ratio"], nb, rng, mem)
    if digits:
      d["digits_fd_per_seed"] = [
        x - y for x, y in zip(table[a]["digits_fd_per_seed"], table["plain"]["digits_fd_per_seed"])
      ]
    else:
      d["nn_dist"], d["nn_dist_ci"] = _boot_paired(per[a]["nn"], per["plain"]["nn"], nb, rng)
    vs_plain[f"{a}_minus_plain"] = d
  return {"arms": table, "paired_vs_rejection": paired, "paired_vs_plain": vs_plain}


def verdict(agg: dict) -> dict:
  """The rule fixed in the config before running: an arm beats the rejection control when the
  paired 95 % CI of ``M_c(arm) − M_c(rejection)`` lies below 0 and its quality is not worse
  (toy: paired CI of the NN-distance difference not above 0; digits: digits-FD higher on no more
  than one seed and by less than 10 % on average)."""
  out = {}
  t = agg["arms"]
  for name, d in agg["paired_vs_rejection"].items():
    arm = name.removesuffix("_minus_rejection")
    lower = d["M_c_ci"][1] < 0
    if "nn_dist_ci" in d:
      q_ok = d["nn_dist_ci"][0] <= 0
    else:
      worse = sum(v > 0 for v in d["digits_fd_per_seed"])
      q_ok = worse <= 1 and d["digits_fd"] < 0.1 * t["rejection"]["digits_fd"]
    if lower and q_ok:
      out[arm] = "beats the rejection control (lower M_c, quality not worse)"
    elif lower:
      out[arm] = (
        "lower M_c than the rejection control but worse quality: no verdict at equal quality"
      )
    elif d["M_c_ci"][0] > 0:
      out[arm] = "memorises MORE than the rejection control"
    else:
      out[arm] = "does not beat the rejection control (M_c difference CI includes 0)"
  return out


def plot(path, agg, name):
  arms = list(agg["arms"])
  fig, ax = plt.subplots(1, 2, figsize=(11, 4))
  for i, a in enumerate(arms):
    r = agg["arms"][a]
    ax[0].errorbar(
      i,
      r["M_c"],
      yerr=[[r["M_c"] - r["M_c_ci"][0]], [r["M_c_ci"][1] - r["M_c"]]],
      fmt="o",
      capsize=4,
    )
    ax[0].scatter(np.full(len(r["M_c_per_seed"]), i + 0.15), r["M_c_per_seed"], s=10, c="gray")
    ax[1].errorbar(
      i,
      r["sq_norm_over_D"],
      yerr=[
        [r["sq_norm_over_D"] - r["sq_norm_over_D_ci"][0]],
        [r["sq_norm_over_D_ci"][1] - r["sq_norm_over_D"]],
      ],
      fmt="s",
      capsize=4,
    )
  for a_, title in zip(
    ax, ("M_1/3 of accepted latents (95 % CI)", "||x_T||²/D of accepted latents")
  ):
    a_.set(xticks=range(len(arms)), xticklabels=arms, title=f"{name}: {title}")
  ax[1].axhline(1.0, color="k", ls=":", lw=0.8)
  plotting.save(fig, path)


SUMMARY = "arms {arms_table}\nverdict {verdict}"


def run(cfg, workdir: str) -> dict:
  """Run the experiment per seed, read its SAIL arms, aggregate with bootstrap CIs."""
  os.makedirs(workdir, exist_ok=True)
  mod = importlib.import_module(f"experiments.sharpness.{cfg.experiment}")
  conf = importlib.import_module(f"experiments.sharpness.configs.{cfg.experiment}")
  raws, results = [], []
  with common.Timer() as t_all:
    for s in cfg.seeds:
      base = conf.get_config(cfg.variant)
      base.seed = int(s)
      base.progress = False
      for key, value in cfg.overrides:
        node = base
        *parts, leaf = key.split(".")
        for p in parts:
          node = node[p]
        node[leaf] = value
      sub = os.path.join(workdir, f"seed_{s}")
      os.makedirs(sub, exist_ok=True)
      done = os.path.join(sub, "results.json")
      if cfg.reuse and os.path.exists(done) and os.path.exists(os.path.join(sub, mod.RAW)):
        with open(done) as f:  # a finished seed of an interrupted run (same config) is reused
          results.append(json.load(f))
      else:
        results.append(mod.run(base, sub))
      raws.append(_load(os.path.join(sub, mod.RAW)))
  agg = aggregate(raws, results, cfg)
  table = {a: {k: r[k] for k in r if not k.endswith("per_seed")} for a, r in agg["arms"].items()}
  out = {
    "config": cfg.to_dict(),
    "seconds": t_all.seconds,
    "protocol": "arms on the same plain noise per seed; values on accepted latents; 95 % "
    "bootstrap CIs over seeds and samples within; differences paired by seed",
    "arms_table": table,
    **agg,
    "verdict": verdict(agg),
    "per_seed_sail_settings": [
      r["sail"]["arms"]["sail"]["settings"] for r in results if "sail" in r["sail"]["arms"]
    ],
  }
  plot(os.path.join(workdir, FIGURE), agg, cfg.experiment)
  return common.save_results(workdir, out)


if __name__ == "__main__":
  common.main(run, CONFIG, SUMMARY, FIGURE)
