"""Planted detection benchmark: do the audit's detectors find memorised GENERATED samples?

One model per seed is trained on a set with a planted duplicated subset (digits: a few images
each copied many times among several hundred distinct digits, a UNet; toy: the audit's 8-D set,
an MLP), so that the SAME model produces both copies and novel samples. Each generated sample
gets the ratio label ``d1² ≤ c d2²`` (the detection labels) and, beside it, its planted-source
identity. Every detector of :mod:`memjax.audit` is scored in its a-priori direction
(:data:`memjax.audit.lenses.DIRECTIONS`) on generated positives against generated negatives:
AUROC and TPR@1%FPR per seed, and the seed-mean AUROC with a stratified bootstrap CI. The
membership baseline (training vs held-out real points) is kept apart. The protocol is fixed in
the config's docstring (``experiments/audit/configs/planted.py``).

References:
  Ross et al., "A Geometric Framework for Understanding Memorization in Generative Models",
  arXiv:2411.00113. Jeon et al., "Understanding and Mitigating Memorization in Generative Models
  via Sharpness of Probability Landscapes", arXiv:2412.04140. Somepalli et al., "Understanding
  and Mitigating Copying in Diffusion Models", arXiv:2305.20086 (duplicated training images are
  regenerated).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from memjax import audit, data, memorisation, metrics, nets, training, unet
from memjax.audit import lenses, toy

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "planted.py")
FIGURE = "planted.png"
TABLE = "planted_table.md"
LABELS = ("ratio", "planted")


class Planted(NamedTuple):
  """A training multiset with a planted duplicated subset."""

  train: np.ndarray  # (N, D), copies included
  held_out: np.ndarray  # (M, D) real points not trained on
  source: np.ndarray  # (N,) index of the planted source of each row, -1 if not planted
  data_shape: tuple


def make_digits(dcfg, key) -> Planted:
  """``num_unique`` distinct digits plus ``num_planted`` digits copied ``copies`` times each,
  and ``num_held_out`` other digits; flattened, in ``[−1, 1]``."""
  for name in ("num_unique", "num_planted", "copies", "num_held_out"):
    v = dcfg[name]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"`cfg.digits.{name}` must be an int >= 1; got {v!r}.")
  images, _ = data.load_digits(flatten=True)
  n, p, m = dcfg.num_unique, dcfg.num_planted, dcfg.num_held_out
  if n + p + m > len(images):
    raise ValueError(f"`digits` asks for {n + p + m} images; sklearn has {len(images)}.")
  perm = np.asarray(jax.random.permutation(key, len(images)))
  unique, planted = images[perm[:n]], images[perm[n : n + p]]
  held = images[perm[n + p : n + p + m]]
  copies = dcfg.copies
  train = np.concatenate([unique, np.repeat(planted, copies, axis=0)]).astype(np.float32)
  source = np.concatenate([np.full(n, -1), np.repeat(np.arange(p), copies)])
  return Planted(train, held.astype(np.float32), source, (8, 8, 1))


def make_toy(tcfg, seed: int) -> Planted:
  """The audit's known-answer toy (:func:`memjax.audit.toy.make_data`) at data seed ``seed``."""
  dcfg = dict(tcfg.data.to_dict(), seed=int(seed))
  d = toy.make_data(dcfg)
  source = np.where(np.all(d.train == d.duplicate, axis=1), 0, -1)
  return Planted(d.train, d.held_out, source, (d.train.shape[1],))


def make_toy_cond(ccfg, seed: int):
  """Class-conditional toy: ``num_classes`` Gaussian clusters ``N(μ_k, I_dim)``,
  ``μ_k ~ N(0, spread² I)``, ``per_class`` draws each; in the first ``num_planted`` classes a
  fraction ``copy_fraction`` of the draws is replaced by ONE of them (a planted copy). Returns
  ``(Planted, labels (N,), held-out labels (M,))``."""
  for name in ("dim", "num_classes", "num_planted", "per_class", "held_per_class"):
    v = ccfg[name]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"`cfg.toy_cond.{name}` must be an int >= 1; got {v!r}.")
  if not 0 < ccfg.copy_fraction < 1:
    raise ValueError(f"`cfg.toy_cond.copy_fraction` must lie in (0, 1); got {ccfg.copy_fraction}.")
  d, C, n = ccfg.dim, ccfg.num_classes, ccfg.per_class
  k_mu, k_x, k_h = jax.random.split(jax.random.PRNGKey(int(seed)), 3)
  mu = np.asarray(jax.random.normal(k_mu, (C, 1, d))) * float(ccfg.spread)
  x = mu + np.asarray(jax.random.normal(k_x, (C, n, d)))
  held = mu + np.asarray(jax.random.normal(k_h, (C, ccfg.held_per_class, d)))
  source = np.full((C, n), -1)
  num_copies = int(round(float(ccfg.copy_fraction) * n))
  for k in range(ccfg.num_planted):
    x[k, :num_copies] = x[k, 0]
    source[k, :num_copies] = k
  labels = np.repeat(np.arange(C), n).astype(np.int32)
  held_labels = np.repeat(np.arange(C), ccfg.held_per_class).astype(np.int32)
  pl = Planted(
    x.reshape(C * n, d).astype(np.float32),
    held.reshape(-1, d).astype(np.float32),
    source.reshape(-1),
    (d,),
  )
  return pl, labels, held_labels


def train_cond_mlp(cfg, pl: Planted, labels, key):
  """A class-conditional MLP by flow matching with label dropout (classifier-free guidance)."""
  mc, dim = cfg.toy_cond, pl.train.shape[1]
  module = nets.CondMLPField(
    dim=dim, num_classes=mc.num_classes, hidden=tuple(mc.hidden), time_dim=mc.time_dim
  )
  u = nets.cond_velocity_fn(module)
  k_init, k_train = jax.random.split(key)
  params = nets.init_cond_params(module, k_init, dim)
  loss = training.cond_fm_objective(
    u,
    jnp.asarray(pl.train),
    jnp.asarray(labels),
    module.null_label,
    cfg.toy_cond.train.batch_size,
    cfg.toy_cond.train.p_uncond,
  )
  params, _, _ = common.fit(loss, params, cfg.toy_cond.train, k_train, progress=cfg.progress)
  return u, module.null_label, params


def train_unet(cfg, train, shape, key):
  """One flow-matching UNet (EMA parameters) on the whole multiset, a fixed number of steps."""
  mc = cfg.unet
  module, u = unet.unet_field(
    shape,
    widths=tuple(mc.widths),
    num_res_blocks=int(mc.num_res_blocks),
    time_dim=int(mc.time_dim),
    attention=bool(mc.attention),
    groups=int(mc.groups),
    conv=mc.conv,
  )
  k_init, k_train = jax.random.split(key)
  params = nets.init_params(module, k_init, train.shape[1], jnp.float32)
  loss = training.fm_objective(u, jnp.asarray(train), int(cfg.train.batch_size))
  params, _, _ = common.fit(loss, params, cfg.train, k_train, progress=cfg.progress, chunk_size=250)
  return u, params


def planted_identity(samples, ok, nearest, d1, pl: Planted) -> np.ndarray:
  """``(N,)`` bool: the nearest training point is a planted copy and ``d1`` is below a third of
  that source's distance to the nearest other training point (rows not ``ok``: False)."""
  out = np.zeros(len(samples), bool)
  flat = pl.train
  for s in np.unique(pl.source[pl.source >= 0]):
    rows = np.flatnonzero(pl.source == s)
    point = flat[rows[0]]
    others = np.delete(flat, rows, axis=0)
    gap = float(np.min(np.linalg.norm(others - point, axis=1)))
    near = ok & np.isin(nearest, rows) & (d1 < gap / 3)
    out |= near
  return out


def one_seed(cfg, seed: int) -> dict:
  """Train one model at ``seed``, audit it, return its labels and detector scores."""
  k_data, k_fit, k_audit = jax.random.split(jax.random.PRNGKey(int(seed)), 3)
  cond = None
  if cfg.case == "digits":
    pl = make_digits(cfg.digits, k_data)
    u, params = train_unet(cfg, pl.train, pl.data_shape, k_fit)
  elif cfg.case == "toy_cond":
    pl, labels, _ = make_toy_cond(cfg.toy_cond, seed)
    u, null, params = train_cond_mlp(cfg, pl, labels, k_fit)
    cond = audit.Conditioning(cfg.toy_cond.num_classes, null, float(cfg.toy_cond.guidance))
  else:
    pl = make_toy(cfg.toy, seed)
    u, params = toy.train(cfg.toy.to_dict(), pl.train, k_fit)
  model = audit.from_function(
    u, params, data_shape=pl.data_shape, cond=cond, info={"seed": int(seed)}
  )
  rep = audit.run(
    model, pl.train, k_audit, cfg.audit, held_out=pl.held_out, mesh=None, progress=False
  )
  ok, mem = rep.generation.ok, rep.memorisation
  ratio = mem.memorised[memorisation.c_label(mem.c)][ok]
  planted = planted_identity(rep.generation.samples, ok, mem.nearest, mem.d1, pl)[ok]
  prompt = {}
  if cond is not None:
    # Per prompt (class label): generations averaged; memorised prompt = at least half of its
    # generations memorised (ratio) / the class is planted (identity).
    prompts = rep.generation.labels[ok]
    for name, score in rep.detectors.items():
      ids, sc, y = metrics.group_by_prompt(score[ok], prompts, ratio)
      prompt.setdefault("scores", {})[name] = sc.mean(axis=1)
    prompt["labels"] = {"ratio": y, "planted": ids < cfg.toy_cond.num_planted}
  return {
    "prompt": prompt,
    "seed": int(seed),
    "num_train": int(len(pl.train)),
    "num_scored": int(ok.sum()),
    "labels": {"ratio": ratio, "planted": planted},
    "scores": {n: s[ok] for n, s in rep.detectors.items()},
    "summary": rep.summary,
    "samples": rep.generation.samples[ok],
  }


def _row(name, per_seed, labels_key, cfg) -> dict:
  """Seed-mean AUROC with its stratified-bootstrap CI, TPR@FPR, per-seed values, status."""
  fpr = float(cfg.audit.summary.fpr)
  aurocs, tprs, boots = [], [], []
  for i, r in enumerate(per_seed):
    y, s = r["labels"][labels_key], r["scores"][name]
    fin = np.isfinite(s)
    y, s = y[fin], s[fin]
    if y.all() or not y.any():
      aurocs.append(float("nan"))
      tprs.append(float("nan"))
      continue
    a, b = metrics.auroc_bootstrap(s, y, num_resamples=cfg.bootstrap, seed=i)
    aurocs.append(a)
    tprs.append(metrics.tpr_at_fpr(s, y, fpr))
    boots.append(b)
  out = {
    "direction": lenses.detector_direction(name),
    "auroc_per_seed": aurocs,
    "tpr_per_seed": tprs,
    "num_seeds_used": len(boots),
  }
  if not boots:
    return dict(
      out,
      auroc=float("nan"),
      ci_lo=float("nan"),
      ci_hi=float("nan"),
      tpr_at_fpr=float("nan"),
      status="undefined (one class in every seed)",
    )
  mean_boot = np.mean(np.stack(boots), axis=0)
  lo, hi = np.quantile(mean_boot, [0.025, 0.975])
  auroc = float(np.nanmean(aurocs))
  return dict(
    out,
    auroc=auroc,
    ci_lo=float(lo),
    ci_hi=float(hi),
    tpr_at_fpr=float(np.nanmean(tprs)),
    status=lenses._status(auroc, float(lo), float(hi)),
  )


def table(per_seed, cfg) -> dict:
  """``{labels: {detector: row}}`` for the ratio and the planted-identity labels (per sample),
  and ``per_prompt_<labels>`` for a conditional model (prompts ranked by mean score)."""
  names = list(per_seed[0]["scores"])
  out = {k: {n: _row(n, per_seed, k, cfg) for n in names} for k in LABELS}
  if per_seed[0]["prompt"]:
    prompts = [dict(r["prompt"]) for r in per_seed]
    for k in LABELS:
      out[f"per_prompt_{k}"] = {n: _row(n, prompts, k, cfg) for n in names}
  return out


def _md_table(tab, prefix: str) -> list:
  f = lambda v: f"{v:.3f}" if np.isfinite(v) else "–"
  lines = [
    "| detector (direction fixed a priori) | AUROC (ratio labels) [95% CI] | TPR@1%FPR | "
    "AUROC (planted identity) [95% CI] | status (ratio labels) |",
    "|---|---|---|---|---|",
  ]
  for n, r in tab[prefix + "ratio"].items():
    p = tab[prefix + "planted"][n]
    lines.append(
      f"| `{n}` | {f(r['auroc'])} [{f(r['ci_lo'])}, {f(r['ci_hi'])}] | {f(r['tpr_at_fpr'])} | "
      f"{f(p['auroc'])} [{f(p['ci_lo'])}, {f(p['ci_hi'])}] | {r['status']} |"
    )
  return lines


def markdown(tab, per_seed, cfg) -> str:
  """The benchmark table (ratio labels; planted identity beside it) as Markdown, per sample and
  (conditional models) per prompt."""
  lines = ["Per sample:", ""] + _md_table(tab, "")
  pos = [int(r["labels"]["ratio"].sum()) for r in per_seed]
  pl = [int(r["labels"]["planted"].sum()) for r in per_seed]
  lines.append("")
  lines.append(
    f"{len(per_seed)} seeds × {per_seed[0]['num_scored']} generated samples; memorised (ratio) "
    f"per seed {pos}, planted copies per seed {pl}."
  )
  if "per_prompt_ratio" in tab:
    lines += ["", "Per prompt (class label; generations averaged):", ""]
    lines += _md_table(tab, "per_prompt_")
    mp = [int(r["prompt"]["labels"]["ratio"].sum()) for r in per_seed]
    num = len(per_seed[0]["prompt"]["labels"]["ratio"])
    lines += ["", f"{num} prompts per seed; memorised prompts (ratio) per seed {mp}."]
  return "\n".join(lines)


def plot(path, tab):
  import matplotlib.pyplot as plt

  names = list(tab["ratio"])
  fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.6))
  x = np.arange(len(names))
  for j, (key, col) in enumerate((("ratio", "C0"), ("planted", "C3"))):
    rows = [tab[key][n] for n in names]
    a = np.asarray([r["auroc"] for r in rows])
    err = np.asarray([[r["auroc"] - r["ci_lo"], r["ci_hi"] - r["auroc"]] for r in rows]).T
    ax.errorbar(x + 0.15 * (2 * j - 1), a, yerr=err, fmt="o", color=col, label=f"{key} labels")
  ax.axhline(0.5, color="k", ls=":", lw=0.8)
  ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
  ax.set(ylim=(-0.02, 1.02), ylabel="AUROC (a-priori direction)", title="planted benchmark")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


SUMMARY = "{table_markdown}"


@common.float32
def run(cfg, workdir: str) -> dict:
  """Every seed: data, one model, the audit; then the table over seeds, the figure, the files."""
  per_seed = []
  with common.Timer() as t:
    for seed in cfg.seeds:
      per_seed.append(one_seed(cfg, int(seed)))
  tab = table(per_seed, cfg)
  md = markdown(tab, per_seed, cfg)
  with open(os.path.join(workdir, TABLE), "w") as f:
    f.write(md + "\n")
  plot(os.path.join(workdir, FIGURE), tab)
  results = {
    "case": cfg.case,
    "seconds": t.seconds,
    "table": tab,
    "table_markdown": md,
    "per_seed": [
      {
        "seed": r["seed"],
        "num_train": r["num_train"],
        "num_scored": r["num_scored"],
        "num_memorised": int(r["labels"]["ratio"].sum()),
        "num_planted_copies": int(r["labels"]["planted"].sum()),
        "planted_and_memorised": int((r["labels"]["ratio"] & r["labels"]["planted"]).sum()),
        "M_c": r["summary"]["M_c"],
        "M_c_held_out": r["summary"].get("M_c_held_out"),
        "detection": r["summary"]["detection"],
        "membership_baseline": r["summary"].get("membership_baseline"),
        "lid": r["summary"].get("lid"),
        "detection_per_prompt": r["summary"].get("detection_per_prompt"),
      }
      for r in per_seed
    ],
  }
  return common.save_results(workdir, results)


if __name__ == "__main__":
  common.main(run, CONFIG, SUMMARY, FIGURE)
