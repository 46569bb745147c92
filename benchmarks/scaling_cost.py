r"""How the cost of memjax's estimators grows with problem size: fitted log-log slopes.

Four panels, three sizes each (the sizes of a panel timed interleaved in one run, best of
``--repeats`` calls after a warm-up call, through the public API with no outer jit):

* Riemannian geodesics (dopri5, rtol 1e-5, atol 1e-7, FM loss on ``B`` fixed triples) vs the
  number of weights ``P`` (three MLP widths, ``S`` fixed). Each RHS is one jvp∘grad over the
  ``B`` triples, ``O(B·P)``, so time per solver step should grow like ``P¹``; the step count
  may change with the network, so the JSON also has the slope of time per step.
* The same vs the number of samples ``S`` (network fixed): the vmapped solve runs the batch's
  largest step count, so on a saturated device time grows like ``S¹``.
* Exact FLIPD vs the data dimension ``D`` (MLP widths fixed, ``N`` points): ``D`` JVPs per point,
  each ``O(D·h + h²)``, so a slope between 1 and 2.
* ``memorisation.nn_ratio`` vs the training-set size ``N`` (fixed queries): ``O(Q·N·D)``, slope 1.

The slope is ``numpy.polyfit(log size, log time, 1)``. Writes ``scaling_cost.json`` (raw times,
sizes, slopes) and ``scaling_cost.png`` (log-log, fitted slope in each legend) under ``--out``.

  python benchmarks/scaling_cost.py                 # small: < 5 min on 2 CPU cores
  python benchmarks/scaling_cost.py --size=large    # GPU: widths to 1024, S to 256, D to 3072
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import compare  # benchmarks/compare.py (the script directory is on sys.path)
import jax
import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import numpy as np
from jax.flatten_util import ravel_pytree

from memjax import curvature, data, laplace, lid, memorisation, nets, paths

SIZES = {
  "small": dict(
    widths=(32, 64, 128),
    width_fixed=64,
    num_triples=256,
    samples=(4, 8, 16),
    samples_fixed=4,
    dims=(128, 256, 512),
    flipd_hidden=(256, 256, 256),
    flipd_points=16,
    train_sizes=(4096, 16384, 65536),
    queries=256,
    nn_dim=64,
  ),
  "large": dict(
    widths=(256, 512, 1024),
    width_fixed=256,
    num_triples=4096,
    samples=(16, 64, 256),
    samples_fixed=16,
    dims=(768, 1536, 3072),
    flipd_hidden=(1024, 1024, 1024),
    flipd_points=256,
    train_sizes=(100_000, 400_000, 1_600_000),
    queries=4096,
    nn_dim=64,
  ),
}


def _slope(sizes, times) -> float:
  return float(np.polyfit(np.log(sizes), np.log(times), 1)[0])


def _geodesic_call(width: int, num_triples: int, num_samples: int):
  """``(P, call)``: one ``laplace.riemannian`` call on a 3-layer MLP of ``width``."""
  key = jax.random.PRNGKey(0)
  k_net, k_data, k_tri, k_v = jax.random.split(key, 4)
  module = nets.MLPField(dim=2, hidden=(width,) * 3)
  params = nets.init_params(module, k_net, 2)
  train, _ = data.sample_mixture(k_data, data.ring_mixture(8), num_triples)
  x1, x0, t = curvature.make_triples(k_tri, train, num_triples)
  u = nets.velocity_fn(module)
  loss_fn = curvature.curvature_loss(u, params, x1, x0, t, alpha=1.0, loss_scale=1.0)
  theta = ravel_pytree(params)[0]
  v = compare.GEO["eta"] * jax.random.normal(k_v, (num_samples, theta.shape[0]))
  opts = {k: compare.GEO[k] for k in ("rtol", "atol", "max_steps")}

  def call():
    res = jax.block_until_ready(laplace.riemannian(loss_fn, theta, v, solver="dopri5", **opts))
    return int(np.max(res.num_steps))

  return int(theta.shape[0]), call


def _flipd_call(dim: int, hidden, num_points: int):
  module = nets.MLPField(dim=dim, hidden=hidden)
  params = nets.init_params(module, jax.random.PRNGKey(1), dim)
  field = functools.partial(nets.velocity_fn(module), params)
  x = jax.random.normal(jax.random.PRNGKey(2), (num_points, dim))
  sched = paths.vp_linear()
  return lambda: jax.block_until_ready(
    lid.flipd(field, x, compare.FLIPD["t0"], sched, parameterisation="eps", chunk_size=128)
  )


def _nn_call(num_train: int, queries: jax.Array, dim: int):
  train = jax.random.normal(jax.random.PRNGKey(num_train), (num_train, dim))
  return lambda: jax.block_until_ready(memorisation.nn_ratio(queries, train))


def _panel(name, xlabel, sizes, calls, repeats):
  res = compare.interleaved(dict(zip(map(str, sizes), calls)), repeats)
  times = [res[str(s)]["best_s"] for s in sizes]
  out = {
    "name": name,
    "xlabel": xlabel,
    "sizes": [int(s) for s in sizes],
    "best_s": times,
    "median_s": [res[str(s)]["median_s"] for s in sizes],
    "first_call_s": [res[str(s)]["first_call_s"] for s in sizes],
    "times_s": [res[str(s)]["times_s"] for s in sizes],
    "slope": _slope(sizes, times),
  }
  outputs = [res[str(s)]["output"] for s in sizes]
  if all(isinstance(o, int) for o in outputs):  # geodesic panels return the max step count
    out["max_steps"] = outputs
    out["slope_time_per_step"] = _slope(sizes, np.asarray(times) / np.asarray(outputs))
  return out


def run(size: str, repeats: int) -> dict:
  cfg = SIZES[size]
  panels = []
  geo_p = [_geodesic_call(w, cfg["num_triples"], cfg["samples_fixed"]) for w in cfg["widths"]]
  panels.append(
    _panel(
      f"geodesics vs P (S={cfg['samples_fixed']}, B={cfg['num_triples']})",
      "weights P",
      [p for p, _ in geo_p],
      [c for _, c in geo_p],
      repeats,
    )
  )
  panels.append(
    _panel(
      f"geodesics vs S (width {cfg['width_fixed']}, B={cfg['num_triples']})",
      "samples S",
      cfg["samples"],
      [_geodesic_call(cfg["width_fixed"], cfg["num_triples"], s)[1] for s in cfg["samples"]],
      repeats,
    )
  )
  panels.append(
    _panel(
      f"exact FLIPD vs D (N={cfg['flipd_points']}, hidden {cfg['flipd_hidden'][0]}x3)",
      "dimension D",
      cfg["dims"],
      [_flipd_call(d, cfg["flipd_hidden"], cfg["flipd_points"]) for d in cfg["dims"]],
      repeats,
    )
  )
  queries = jax.random.normal(jax.random.PRNGKey(3), (cfg["queries"], cfg["nn_dim"]))
  panels.append(
    _panel(
      f"nn_ratio vs N (Q={cfg['queries']}, D={cfg['nn_dim']})",
      "training points N",
      cfg["train_sizes"],
      [_nn_call(n, queries, cfg["nn_dim"]) for n in cfg["train_sizes"]],
      repeats,
    )
  )
  return {"size": size, "repeats": repeats, "device": str(jax.devices()[0]), "panels": panels}


def plot(res: dict, path: str) -> None:
  fig, axes = plt.subplots(2, 2, figsize=(9, 7))
  for ax, panel in zip(axes.ravel(), res["panels"]):
    x, y = np.asarray(panel["sizes"], float), np.asarray(panel["best_s"])
    slope, icpt = np.polyfit(np.log(x), np.log(y), 1)
    ax.loglog(x, y, "o", label="best time")
    grid = np.geomspace(x.min(), x.max(), 50)
    label = f"fit: slope {slope:.2f}"
    if "slope_time_per_step" in panel:
      label += f" (time per step: {panel['slope_time_per_step']:.2f})"
    ax.loglog(grid, np.exp(icpt) * grid**slope, "-", label=label)
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xticks(x, labels=[f"{int(v):,}" for v in x])  # label the measured sizes
    ax.set_title(panel["name"], fontsize=9)
    ax.set_xlabel(panel["xlabel"])
    ax.set_ylabel("seconds per call")
    ax.legend(fontsize=8)
  fig.suptitle(f"memjax cost scaling ({res['size']}, {res['device']})", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="small")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per size")
  parser.add_argument("--out", default="runs/benchmarks/scaling_cost", help="output directory")
  args = parser.parse_args()
  start = time.perf_counter()
  res = run(args.size, args.repeats)
  res["wall_s"] = time.perf_counter() - start
  print(f"cost scaling ({res['size']}; {res['device']}; best of {res['repeats']})")
  for panel in res["panels"]:
    print(f"\n{panel['name']}: log-log slope {panel['slope']:.2f}")
    for i, (s, t) in enumerate(zip(panel["sizes"], panel["best_s"])):
      steps = f"  max steps {panel['max_steps'][i]}" if "max_steps" in panel else ""
      print(f"  {panel['xlabel']:>18} = {s:>8}: {t:9.4f} s{steps}")
    if "slope_time_per_step" in panel:
      print(f"  slope of time per step: {panel['slope_time_per_step']:.2f}")
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "scaling_cost.json"), "w") as f:
    json.dump(res, f, indent=2)
  plot(res, os.path.join(args.out, "scaling_cost.png"))
  print(f"\nwall time {res['wall_s']:.1f} s; wrote {args.out}/scaling_cost.{{json,png}}")


if __name__ == "__main__":
  main()
