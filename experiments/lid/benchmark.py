r"""LID on scikit-dimension's benchmark manifolds: FLIPD and the normal bundle against LPCA, MLE,
TwoNN, DANCo and ESS.

For every selected manifold of ``skdim.datasets.BenchmarkManifolds`` (the Hein–Audibert /
Campadelli collection with known intrinsic dimension ``d``), seeded and standardised by one
similarity (centred, divided by one scale), the run trains a VP ε-MLP and a linear-FM velocity
MLP with the held-out stopping rule of :mod:`experiments.lid.fitting` (cached with orbax, so a
rerun reuses them), then estimates the LID of the evaluation points with

* FLIPD of each model at a fixed ``t0`` stated in the config and at the Kneedle knee of the mean
  FLIPD curve (exact trace for small ``D``, Hutchinson above ``cfg.lid.exact_trace_max_dim``),
* the normal bundle of each model,
* FLIPD and the normal bundle of the EXACT score of the noised data distribution (float64) where
  :func:`memjax.data.manifold_mixture_score` has it (the sphere M1, the affine cube M9 and the
  hypercube boundaries M10, a mixture of ``2(d+1)`` flat faces), so that model error and
  estimator error are told apart,
* memjax's LPCA, MLE and TwoNN (float64), and scikit-dimension's lPCA, MLE, TwoNN, DANCo and ESS.

Reported per manifold and estimator: the mean estimate, the MAE ``mean_i |d̂_i − d|`` (a global
estimator gives every point its global value), the wall time; across manifolds: the mean MAE, Lin's
concordance correlation of the pooled per-point estimates with the truth and Spearman's rank
correlation of the per-manifold means with ``d``. Writes ``results.json``, ``benchmark_table.md``,
``estimates.npz`` and the figure ``lid_benchmark.png``::

  python -m experiments.lid.benchmark --config=experiments/lid/configs/benchmark.py \
      --config.workdir=runs/lid_benchmark
  python -m experiments.lid.benchmark --config=experiments/lid/configs/benchmark.py:large  # GPU
"""

from __future__ import annotations

import functools
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from absl import logging

from experiments import common, plotting
from experiments.lid import fitting, manifolds
from experiments.lid.configs import benchmark as benchmark_config
from memjax import data, lid, paths

CONFIG = os.path.join(os.path.dirname(__file__), "configs", "benchmark.py")
FIGURE = "lid_benchmark.png"
TABLE = "benchmark_table.md"
ESTIMATES = "estimates.npz"

TRUTH = {name: (d, dim) for name, d, dim in benchmark_config.ALL}

# The two models of every manifold: training objective, schedule and parameterisation.
MODELS = {
  "vp_eps": dict(objective="denoising", schedule="vp_linear", parameterisation="eps"),
  "fm_velocity": dict(objective="fm", schedule="linear_fm", parameterisation="velocity"),
}


class Estimator(NamedTuple):
  """One column of the benchmark table."""

  key: str
  label: str
  group: str  # "model", "exact", "memjax" or "skdim"
  pointwise: bool  # False: one global estimate per manifold, given to every point


def estimators(cfg) -> tuple[Estimator, ...]:
  """The estimators of a run, in table order."""
  out = []
  for m in cfg.models:
    tag = {"vp_eps": "VP", "fm_velocity": "FM"}.get(m, m)
    out += [
      Estimator(f"flipd_{m}", f"FLIPD {tag}", "model", True),
      Estimator(f"flipd_knee_{m}", f"FLIPD {tag} knee", "model", True),
      Estimator(f"nb_{m}", f"NB {tag}", "model", True),
    ]
  if cfg.lid.exact_score:
    out += [
      Estimator("flipd_exact", "FLIPD exact", "exact", True),
      Estimator("flipd_exact_knee", "FLIPD exact @VP knee", "exact", True),
    ]
    if cfg.lid.exact_nb:
      out.append(Estimator("nb_exact", "NB exact", "exact", True))
  out += [
    Estimator("lpca", "memjax LPCA", "memjax", True),
    Estimator("mle", "memjax MLE", "memjax", True),
    Estimator("twonn", "memjax TwoNN", "memjax", False),
  ]
  names = {"lpca": "lPCA", "mle": "MLE", "twonn": "TwoNN", "danco": "DANCo", "ess": "ESS"}
  pointwise = {"lpca": True, "mle": True, "twonn": False, "danco": False, "ess": True}
  for s in cfg.classical.skdim:
    out.append(Estimator(f"skdim_{s}", f"skdim {names[s]}", "skdim", pointwise[s]))
  return tuple(out)


# ---------------------------------------------------------------------------
# Metrics.


def mae(estimates, truth) -> float:
  """Mean absolute error ``mean_i |d̂_i − d_i|`` (``truth`` a scalar or per point)."""
  est = np.asarray(estimates, np.float64)
  return float(np.mean(np.abs(est - np.asarray(truth, np.float64))))


def lin_ccc(estimates, truth) -> float:
  """Lin's concordance correlation ``2 cov(x, y) / (var x + var y + (x̄ − ȳ)²)`` (population
  moments); 1 only when ``x = y`` for every pair, so it punishes bias as well as scatter. NaN when
  the truth is constant (it is then 0 for any estimates: no concordance to measure)."""
  x, y = np.asarray(estimates, np.float64), np.asarray(truth, np.float64)
  if np.all(y == y[0]):
    return float("nan")
  cov = np.mean((x - x.mean()) * (y - y.mean()))
  return float(2.0 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2))


def spearman(a, b) -> float:
  """Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 pairs."""
  import scipy.stats

  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape[0] < 3 or np.all(a == a[0]) or np.all(b == b[0]):
    return float("nan")
  return float(scipy.stats.spearmanr(a, b).statistic)


def per_manifold_row(values, d: int, seconds: float) -> dict:
  """Mean, std, MAE, error of the mean and wall time of one estimator on one manifold."""
  v = np.asarray(values, np.float64)
  finite = np.isfinite(v)
  return {
    "mean": float(np.mean(v[finite])) if finite.any() else float("nan"),
    "std": float(np.std(v[finite])) if finite.any() else float("nan"),
    "mae": mae(v, d) if finite.all() else float("nan"),
    "abs_error_of_mean": float(abs(np.mean(v) - d)),
    "num_nonfinite": int(np.sum(~finite)),
    "seconds": float(seconds),
  }


def summarise_estimators(per_manifold: dict, points: dict, ests, max_dim: int = 10) -> dict:
  """Across manifolds, per estimator: mean MAE (all and ``d ≤ max_dim``), pooled Lin CCC of the
  per-point estimates with the truth, Spearman of the per-manifold means with ``d``, total time.

  ``per_manifold[name]`` holds ``intrinsic_dim`` and ``estimators[key]`` rows; ``points[name][key]``
  the per-point estimates.
  """
  out = {}
  for e in ests:
    names = [n for n, r in per_manifold.items() if e.key in r["estimators"]]
    if not names:
      continue
    dims = np.asarray([per_manifold[n]["intrinsic_dim"] for n in names])
    rows = [per_manifold[n]["estimators"][e.key] for n in names]
    maes = np.asarray([r["mae"] for r in rows])
    low = dims <= max_dim
    x = np.concatenate([points[n][e.key] for n in names])
    y = np.concatenate(
      [np.full(len(points[n][e.key]), per_manifold[n]["intrinsic_dim"]) for n in names]
    )
    ok = np.isfinite(x)
    out[e.key] = {
      "label": e.label,
      "group": e.group,
      "pointwise": e.pointwise,
      "num_manifolds": len(names),
      "mean_mae": float(np.mean(maes)),
      f"mean_mae_d_le_{max_dim}": float(np.mean(maes[low])) if low.any() else float("nan"),
      "lin_ccc_pooled": lin_ccc(x[ok], y[ok]) if ok.sum() > 1 else float("nan"),
      "spearman_means_vs_d": spearman([r["mean"] for r in rows], dims),
      "total_seconds": float(sum(r["seconds"] for r in rows)),
    }
  return out


def acceptance(per_manifold: dict, ests, max_dim: int = 10) -> dict:
  """Per model-based estimator and manifold with ``d ≤ max_dim``: is its MAE within the spread of
  the best scikit-dimension estimator there, ``MAE ≤ MAE_best + std_best`` (``std_best``: the std
  of the best one's per-point estimates, 0 for a global one)?"""
  skd = [e.key for e in ests if e.group == "skdim"]
  out = {}
  for e in ests:
    if e.group not in ("model", "exact"):
      continue
    rows = {}
    for name, r in per_manifold.items():
      E = r["estimators"]
      if r["intrinsic_dim"] > max_dim or e.key not in E or not skd:
        continue
      best = min(skd, key=lambda k: E[k]["mae"] if np.isfinite(E[k]["mae"]) else np.inf)
      bound = E[best]["mae"] + E[best]["std"]
      rows[name] = {
        "mae": E[e.key]["mae"],
        "best_skdim": best,
        "best_skdim_mae": E[best]["mae"],
        "best_skdim_std": E[best]["std"],
        "within": bool(E[e.key]["mae"] <= bound),
      }
    out[e.key] = {"per_manifold": rows, "num_within": sum(v["within"] for v in rows.values())}
    out[e.key]["num_manifolds"] = len(rows)
  return out


# ---------------------------------------------------------------------------
# Data.


def manifold_seed(seed: int, name: str, held_out: bool = False) -> int:
  """The ``random_state`` of one draw: ``seed·1000 + index in the collection (+ 500 held out)``,
  so a manifold's data do not depend on which others are selected."""
  index = [n for n, _, _ in benchmark_config.ALL].index(name)
  return int(seed) * 1000 + index + (500 if held_out else 0)


def generate(name: str, n: int, random_state: int, noise: float = 0.0) -> np.ndarray:
  """``n`` points of benchmark manifold ``name`` (float64), shuffled (some generators emit their
  pieces in order)."""
  import skdim

  if name not in TRUTH:
    raise ValueError(f"`name` must be a BenchmarkManifolds name {sorted(TRUTH)}; got {name!r}.")
  d, dim = TRUTH[name]
  bm = skdim.datasets.BenchmarkManifolds(random_state=random_state)
  x = np.asarray(bm.generate(name, n=int(n), dim=dim, d=d, noise=float(noise)), np.float64)
  return x[np.random.RandomState(random_state).permutation(x.shape[0])]


class Standardiser(NamedTuple):
  """``x ↦ (x − mean) / scale``: one scale for all coordinates (a similarity)."""

  mean: np.ndarray  # (D,)
  scale: float  # RMS of the standard deviations of the non-constant coordinates

  def __call__(self, x):
    return (np.asarray(x, np.float64) - self.mean) / self.scale


def standardiser(x) -> Standardiser:
  """Centre and divide by ``sqrt(mean_j var_j)`` over the coordinates that vary (many benchmark
  manifolds pad with zero coordinates; per-coordinate scaling would divide by zero there and
  would bend spheres into ellipsoids)."""
  x = np.asarray(x, np.float64)
  var = x.var(axis=0)
  active = var > 1e-12 * var.max()
  return Standardiser(x.mean(axis=0), float(np.sqrt(np.mean(var[active]))))


def exact_mixture(name: str, std: Standardiser):
  """The standardised data distribution as a :class:`memjax.data.ManifoldMixture` (its noised
  score is exact), or ``None`` where memjax has no closed form.

  M1: the uniform unit sphere ``S^d`` in the first ``d + 1`` coordinates; M9: ``U[−2.5, 2.5]^d``;
  M10: the boundary of ``[0, 1]^{d+1}``, ``2(d+1)`` faces of equal weight (the generator's
  truncation to ``n`` points drops at most ``2(d+1)`` points of the last faces).
  """
  d, dim = TRUTH[name]
  eye = np.eye(dim)
  if name == "M1_Sphere":
    kinds, centres, frames, scale = ("sphere",), [np.zeros(dim)], [eye[:, : d + 1]], 1.0
  elif name == "M9_Affine":
    kinds, centres, frames, scale = ("affine",), [np.zeros(dim)], [eye[:, :d]], 2.5
  elif name.startswith("M10"):
    kinds, centres, frames, scale = [], [], [], 0.5
    for i in range(d + 1):
      for side in (0.0, 1.0):
        c = np.zeros(dim)
        c[: d + 1] = 0.5
        c[i] = side
        kinds.append("affine")
        centres.append(c)
        frames.append(eye[:, [j for j in range(d + 1) if j != i]])
    kinds = tuple(kinds)
  else:
    return None
  cs = jnp.asarray(np.stack([std(c[None])[0] for c in centres]), jnp.float32)
  fs = tuple(jnp.asarray(f, jnp.float32) for f in frames)
  return data.ManifoldMixture(kinds, (d,) * len(kinds), cs, fs, float(scale / std.scale))


# ---------------------------------------------------------------------------
# Estimators.


def classical(cfg, train: np.ndarray, num_eval: int, seed: int):
  """memjax's LPCA, MLE, TwoNN (float64) and scikit-dimension's estimators on ``train``: per-point
  arrays ``(num_eval,)`` (global values repeated) and wall seconds per estimator."""
  from sklearn.neighbors import NearestNeighbors

  C = cfg.classical
  out, secs = {}, {}

  def timed(key, fn):
    t = time.perf_counter()
    value = np.asarray(fn(), np.float64)
    secs[key] = time.perf_counter() - t
    out[key] = np.broadcast_to(value, (num_eval,)).copy() if value.ndim == 0 else value[:num_eval]

  with common.x64(True):
    x = jnp.asarray(train, jnp.float64)
    timed(
      "lpca",
      lambda: lid.lpca(x, k=int(C.lpca_k), threshold=C.lpca_threshold, include_self=False),
    )
    timed("mle", lambda: lid.mle(x, k=int(C.mle_k))[1])
    timed("twonn", lambda: lid.twonn(x, discard_fraction=C.twonn_discard_fraction))
  kmax = max(int(C.lpca_k), int(C.ess_k))
  _, knn = NearestNeighbors(n_neighbors=kmax).fit(train).kneighbors()  # self excluded, as skdim
  knn = knn[:num_eval]
  for s in C.skdim:
    timed(f"skdim_{s}", functools.partial(_skdim, s, C, train, knn, seed))
  return out, secs


def _skdim(name: str, C, train: np.ndarray, knn: np.ndarray, seed: int):
  """scikit-dimension's estimator ``name`` on ``train``: pointwise (at the rows of ``knn``, the
  evaluation points' neighbours, self excluded) or global."""
  import skdim

  if name == "lpca":
    est = skdim.id.lPCA(ver="FO", alphaFO=C.lpca_threshold)
    k = int(C.lpca_k)
    return est.fit_pw(train, precomputed_knn=knn[:, :k], n_neighbors=k).dimension_pw_
  if name == "mle":
    return skdim.id.MLE().fit(train, n_neighbors=int(C.mle_k)).dimension_pw_
  if name == "twonn":
    return skdim.id.TwoNN(discard_fraction=C.twonn_discard_fraction).fit(train).dimension_
  if name == "danco":
    est = skdim.id.DANCo(k=int(C.danco_k), ver=C.danco_ver, random_state=seed)
    return est.fit(train).dimension_
  if name == "ess":
    est = skdim.id.ESS(random_state=seed)
    return [est.fit_once(train[i]).dimension_ for i in knn[:, : int(C.ess_k)]]
  raise ValueError(f"unknown scikit-dimension estimator {name!r} in cfg.classical.skdim.")


def model_estimates(cfg, field, schedule, parameterisation, x_eval, key):
  """FLIPD at the fixed ``t0`` and at the knee, and the normal bundle, of one learned field."""
  L = cfg.lid
  times = manifolds.model_times(cfg, schedule)
  dim = x_eval.shape[1]
  k_probe, k_nb = jax.random.split(key)
  probes = {}
  if dim > L.exact_trace_max_dim:
    probes = dict(n_probes=int(L.n_probes), key=k_probe, sampler=L.sampler)
  kw = dict(parameterisation=parameterisation, batch_size=L.batch_size, **probes)
  out, secs = {}, {}
  with common.Timer() as t:
    details = lid.flipd_details(field, x_eval, times["t0"], schedule, **kw)
    out["flipd"] = np.asarray(details.lid)
  secs["flipd"] = t.seconds
  out["flipd_sem_mean"] = float(np.mean(np.asarray(details.sem)))
  with common.Timer() as t:
    grid = jnp.asarray(times["t0_grid"], x_eval.dtype)
    knee = lid.flipd_at_knee(field, x_eval, grid, schedule, **kw)
    out["curves"] = np.asarray(knee.curves)
  secs["flipd_knee"] = t.seconds
  out["i_knee"], out["t0_knee"] = knee.index, knee.t0
  out["flipd_knee"] = out["curves"][knee.index]
  with common.Timer() as t:
    nb = lid.normal_bundle(
      field,
      x_eval,
      times["nb_t0"],
      schedule,
      k_nb,
      parameterisation=parameterisation,
      centre=L.nb_centre,
      batch_size=L.batch_size,
    )
    out["nb"] = np.asarray(nb.lid)
  secs["nb"] = t.seconds
  out["trace"] = "exact" if not probes else f"hutchinson ({L.n_probes} {L.sampler} probes)"
  return out, secs, times


def run_manifold(cfg, name: str, schedules: dict, cache_dir: str, key):
  """Every estimator on one manifold: its results row, per-point arrays and FLIPD curves."""
  d, dim = TRUTH[name]
  D = cfg.data
  train64 = generate(name, D.num_train, manifold_seed(cfg.seed, name), D.noise)
  held64 = generate(name, D.num_heldout, manifold_seed(cfg.seed, name, True), D.noise)
  std = standardiser(train64)
  train64, held64 = std(train64), std(held64)
  n_eval = min(int(D.num_eval), train64.shape[0])
  points, secs = classical(cfg, train64, n_eval, manifold_seed(cfg.seed, name))
  train, held = jnp.asarray(train64, jnp.float32), jnp.asarray(held64, jnp.float32)
  x_eval = train[:n_eval]
  row = {
    "intrinsic_dim": d,
    "ambient_dim": dim,
    "standardisation_scale": std.scale,
    "training": {},
    "model_times": {},
  }
  curves = {}
  *model_keys, k_exact = jax.random.split(key, len(cfg.models) + 1)
  keys = dict(zip(cfg.models, model_keys))
  for m in cfg.models:
    spec = MODELS[m]
    schedule = schedules[spec["schedule"]]
    k_fit, k_est = jax.random.split(keys[m])
    objective = dict(objective=spec["objective"], parameterisation=spec["parameterisation"])
    if spec["objective"] == "denoising":
      objective.update(schedule=schedule, t_min=cfg.train.t_min)
    apply_fn, params, report = fitting.fit_with_stopping(
      train, held, cfg, k_fit, cache_dir=cache_dir, **objective
    )
    field = functools.partial(apply_fn, params)
    est, est_secs, times = model_estimates(
      cfg, field, schedule, spec["parameterisation"], x_eval, k_est
    )
    row["training"][m] = report
    row["model_times"][m] = {
      **times,
      "t0_knee": est["t0_knee"],
      "trace": est["trace"],
      "flipd_sem_mean": est["flipd_sem_mean"],
    }
    for k in ("flipd", "flipd_knee", "nb"):
      points[f"{k}_{m}"] = est[k]
      secs[f"{k}_{m}"] = est_secs[k]
    curves[m] = est["curves"].mean(axis=1).tolist()
    if m == "vp_eps":
      vp_times, vp_knee = times, est["i_knee"]
  mix = exact_mixture(name, std) if cfg.lid.exact_score else None
  row["exact_score"] = mix is not None
  if mix is not None and "vp_eps" in cfg.models:
    exact, exact_secs = manifolds.estimate_exact(
      mix, schedules["vp_linear"], cfg, vp_times, np.asarray(x_eval), vp_knee, k_exact
    )
    points["flipd_exact"] = exact["flipd_exact"]
    points["flipd_exact_knee"] = exact["flipd_exact_knee"]
    secs["flipd_exact"] = secs["flipd_exact_knee"] = exact_secs["flipd_exact_curve"]
    if "nb_exact" in exact:
      points["nb_exact"], secs["nb_exact"] = exact["nb_exact"], exact_secs["nb_exact"]
    curves["exact"] = exact["curves_exact"].mean(axis=1).tolist()
  row["estimators"] = {k: per_manifold_row(v, d, secs[k]) for k, v in points.items()}
  row["flipd_curve_means"] = curves
  return row, points


# ---------------------------------------------------------------------------
# Outputs.


def _fmt(v, nd=2) -> str:
  return "–" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def markdown_table(results: dict) -> str:
  """The benchmark table: one row per estimator, one column per manifold (``mean / MAE``), then
  the summary columns."""
  per = results["manifolds"]
  names = list(per)
  summ = results["summary"]
  head = ["estimator"] + [
    f"{n} (d={per[n]['intrinsic_dim']}, D={per[n]['ambient_dim']})" for n in names
  ]
  head += ["mean MAE (d≤10)", "Lin CCC", "Spearman", "seconds"]
  lines = [
    "Cells: mean estimate / MAE over the evaluation points (global estimators: the global value).",
    "",
    "| " + " | ".join(head) + " |",
    "|" + "---|" * len(head),
  ]
  for key, s in summ.items():
    cells = [s["label"]]
    for n in names:
      r = per[n]["estimators"].get(key)
      cells.append("–" if r is None else f"{_fmt(r['mean'])} / {_fmt(r['mae'])}")
    cells += [
      _fmt(s["mean_mae_d_le_10"]),
      _fmt(s["lin_ccc_pooled"], 3),
      _fmt(s["spearman_means_vs_d"], 3),
      _fmt(s["total_seconds"], 1),
    ]
    lines.append("| " + " | ".join(cells) + " |")
  lines += [
    "",
    "Training (per model: stopping step / cap, seconds; cached fits show 'cached'):",
    "",
  ]
  lines.append("| manifold | " + " | ".join(results["config"]["models"]) + " |")
  lines.append("|---|" + "---|" * len(results["config"]["models"]))
  for n in names:
    cells = []
    for m in results["config"]["models"]:
      tr = per[n]["training"][m]
      note = " cached" if tr.get("cached") else ""
      cells.append(f"{tr['stopping_step']}/{tr['max_steps']}, {tr['train_seconds']:.0f}s{note}")
    lines.append(f"| {n} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(path: str, results: dict, ests) -> None:
  """Mean estimate against the true ``d``, one marker per estimator (bars: per-point std)."""
  per = results["manifolds"]
  groups = (("model", "exact"), ("memjax", "skdim"))
  titles = ("model-based (learned and exact score)", "data-based (memjax and scikit-dimension)")
  fig, axes = plt.subplots(1, 2, figsize=(15, 6.5))
  markers = "osD^v<>pP*Xhd"
  dmax = max(r["intrinsic_dim"] for r in per.values())
  for ax, group, title in zip(axes, groups, titles):
    chosen = [e for e in ests if e.group in group]
    top = 1.3 * dmax
    for j, e in enumerate(chosen):
      xs, ys, es = [], [], []
      for r in per.values():
        if e.key in r["estimators"]:
          xs.append(r["intrinsic_dim"] * np.exp(0.035 * (j - (len(chosen) - 1) / 2)))
          ys.append(r["estimators"][e.key]["mean"])
          es.append(r["estimators"][e.key]["std"])
      ys, es = np.asarray(ys), np.asarray(es)
      lower = np.minimum(es, ys - 0.55)  # keep the bars on the log axis
      top = max(top, 1.3 * float(np.nanmax(ys)))
      ax.errorbar(
        xs,
        ys,
        yerr=[lower, es],
        fmt=markers[j % len(markers)],
        ms=6,
        lw=0.8,
        capsize=2,
        color=f"C{j % 10}",
        label=e.label,
        alpha=0.85,
      )
    ax.plot([0.8, dmax * 1.25], [0.8, dmax * 1.25], "k:", lw=1, label="estimate = d")
    ax.set(
      xscale="log",
      yscale="log",
      ylim=(0.5, top),
      xlabel="true intrinsic dimension d (markers spread sideways)",
      ylabel="mean estimate ± per-point std",
      title=title,
    )
    ax.legend(fontsize=7, ncol=2)
  plotting.save(fig, path)


def summarise(results: dict, workdir: str) -> str:
  """Closing lines of the CLI: the table file and the per-estimator summary."""
  lines = [f"table: {os.path.join(workdir, TABLE)}; wall {results['wall_seconds']:.0f}s"]
  for s in results["summary"].values():
    lines.append(
      f"{s['label']:>22}: mean MAE {s['mean_mae']:.3f} (d≤10 {s['mean_mae_d_le_10']:.3f}), "
      f"CCC {s['lin_ccc_pooled']:.3f}, Spearman {s['spearman_means_vs_d']:.3f}, "
      f"{s['total_seconds']:.1f}s"
    )
  return "\n".join(lines)


@common.float32
def run(cfg, workdir: str) -> dict:
  """Train, estimate and compare on every selected manifold; write results, table, figure."""
  start = time.perf_counter()
  for name in cfg.data.manifolds:
    if name not in TRUTH:
      raise ValueError(f"`data.manifolds` entry {name!r} is not a BenchmarkManifolds name.")
  cache_dir = cfg.cache_dir or os.path.join(workdir, "models")
  schedules = {s: paths.get_schedule(s) for s in ("vp_linear", "linear_fm")}
  ests = estimators(cfg)
  key = jax.random.PRNGKey(cfg.seed)
  per, points = {}, {}
  for name in cfg.data.manifolds:
    with common.Timer() as t:
      per[name], points[name] = run_manifold(
        cfg, name, schedules, cache_dir, jax.random.fold_in(key, manifold_seed(0, name))
      )
    per[name]["wall_seconds"] = t.seconds
    logging.info("%s done in %.0fs", name, t.seconds)
  ests = tuple(e for e in ests if any(e.key in r["estimators"] for r in per.values()))
  results = {
    "config": cfg.to_dict(),
    "manifolds": per,
    "summary": summarise_estimators(per, points, ests),
    "acceptance_within_best_skdim_spread_d_le_10": acceptance(per, ests),
    "protocol": {
      "data": "skdim.datasets.BenchmarkManifolds(random_state=seed·1000 + index [+500 held out])"
      ".generate(name, n, D, d), shuffled, centred and divided by one scale (a similarity)",
      "training": fitting.rule_text(cfg),
      "t0": f"fixed t0 = {cfg.lid.t0} on {cfg.lid.t0_schedule} (stated in the config before any "
      "run), carried to each model's schedule by σ/ψ; the knee t0 (Kneedle on the mean learned "
      "FLIPD curve) beside it",
      "mae": "mean over evaluation points of |estimate − d| (global estimators: |global − d|)",
      "concordance": "Lin's concordance correlation of the per-point estimates with the true d, "
      "pooled over all manifolds of the estimator (true d is constant on each manifold, so a "
      "per-manifold concordance is undefined); and Spearman's rank correlation of the "
      "per-manifold mean estimates with d",
      "exact": "FLIPD / NB of the exact score of the noised standardised distribution (float64) "
      "at the fixed t0 and at the VP model's knee: learned − exact is the model's share",
      "seconds": "wall time per estimator including JIT compilation; model-based estimators "
      "exclude training (see training.train_seconds)",
    },
    "wall_seconds": time.perf_counter() - start,
  }
  results = common.save_results(workdir, results)
  np.savez(
    os.path.join(workdir, ESTIMATES),
    **{f"{n}/{k}": v for n, p in points.items() for k, v in p.items()},
  )
  with open(os.path.join(workdir, TABLE), "w") as f:
    f.write(markdown_table(results))
  plot(os.path.join(workdir, FIGURE), results, ests)
  return results


if __name__ == "__main__":
  common.main(run, CONFIG, summarise, FIGURE)
