r"""Image-scale memorisation: Euclidean vs Riemannian Laplace over the FIRST UNet layer.

Train a flow-matching UNet on a small image subset until it memorises (orbax checkpoint;
``--config.train.restore=DIR`` reuses a finished one), fit Lanczos on the curvature loss of the
first conv layer (rest frozen at the MAP) with :func:`memjax.laplace.fit`, draw paired samples
from every sampler of ``cfg.posterior.samplers`` for every η from the SAME z, generate images
from FIXED noise x0 with every sampled model, and report M_c over the c grid plus quality
proxies (mean nearest-neighbour distance of generated images to a held-out set; held-out-image
FM loss)::

  python -m experiments.laplace.images --config=experiments/laplace/configs/images.py  # digits
  python -m experiments.laplace.images --config=experiments/laplace/configs/images.py:cifar10

Failed geodesics are counted and excluded from ALL samplers (paired), never replaced.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import common, plotting
from experiments.laplace import pipeline
from memjax import data, neighbours, nets, training, unet

# The default ``--config`` (see :func:`experiments.common.main`).
CONFIG = os.path.join(os.path.dirname(__file__), "configs", "images.py")

FIGURES = ("images_grid.png", "images_curves.png")


def load_images(data_cfg, key):
  """``(train (n, D), heldout (m, D), image_shape)``, flattened float32 in [−1, 1].

  The held-out images are disjoint from the training images.
  """
  classes = tuple(data_cfg.classes) or None
  n, m = data_cfg.num_train, data_cfg.num_heldout
  if data_cfg.dataset == "digits":
    x, y = data.load_digits()
    idx = np.flatnonzero(np.isin(y, classes)) if classes else np.arange(len(x))
    perm = idx[np.asarray(jax.random.permutation(key, len(idx)))]
    train, held = x[perm[:n]], x[perm[n : n + m]]
  else:
    x, y = data.load_tfds(data_cfg.dataset, "train", max_examples=max(20 * n, 5000))
    train, _ = data.class_subset(key, x, y, n, classes)
    held, _ = data.load_tfds(data_cfg.dataset, "test", max_examples=m)
  shape = train.shape[1:]
  train = np.asarray(train, np.float32).reshape(len(train), -1)
  held = np.asarray(held, np.float32).reshape(len(held), -1)
  return train, held, shape


def train_map(cfg, train, shape, key, ckpt_dir, held=None):
  """Flow-matching MAP (EMA params) of the UNet; resumes / skips from ``ckpt_dir``.

  Returns ``(u, params, train_result)``.
  """
  k_init, k_train = jax.random.split(key)
  mc = cfg.model
  module, u = unet.unet_field(
    shape,
    widths=tuple(mc.widths),
    num_res_blocks=mc.num_res_blocks,
    time_dim=mc.time_dim,
    attention=mc.attention,
    groups=mc.groups,
    conv=mc.conv,
  )
  params = nets.init_params(module, k_init, train.shape[1], jnp.float32)
  train_cfg = cfg.train.copy_and_resolve_references()
  train_cfg.warmup = min(cfg.train.warmup, cfg.train.steps // 10 + 1)
  loss_fn = training.fm_objective(u, jnp.asarray(train, jnp.float32), cfg.train.batch_size)
  params, _, res = common.fit(
    loss_fn,
    params,
    train_cfg,
    k_train,
    checkpoint_dir=ckpt_dir,
    metadata={
      "config": cfg.to_dict(),
      "data": common.image_data_recipe(cfg.data.dataset, train, shape, held),
    },
    progress=cfg.progress,
    chunk_size=250,
  )
  return u, params, res


def make_extra_metrics(held):
  """Mean NN distance to the held-out images and the mean pixel-range violation."""

  def extra(thetas, ok, xs):
    del thetas, ok
    xs = jnp.asarray(xs, held.dtype)
    nn = neighbours.nearest_two(xs, held)
    return {
      "nn_distance_to_heldout_mean": float(jnp.mean(nn.d1)),
      "pixel_range_violation": float(jnp.mean(jnp.maximum(jnp.abs(xs) - 1.0, 0.0))),
    }

  return extra


# What each metric rewards (results.json ``metric_notes``).
METRIC_NOTES = {
  "heldout_fm_loss": "FM loss on fresh triples whose data points are HELD-OUT images (disjoint "
  "from the training images): rewards generalisation beyond the training set.",
  "memorisation": "M_c = fraction of generated images with d1^2 <= c d2^2 against the training "
  "images (the papers' squared criterion, keyed by c). M_c_true_samples is M_c of the held-out "
  "real images themselves (what an ideal sampler of the data distribution scores by chance), "
  "M_c_excess = M_c - that baseline.",
  "nn_distance_to_heldout_mean": "mean L2 distance of generated images to the nearest held-out "
  "image: a quality proxy that rewards images near real data, copies of training images "
  "included (reference_train_images_nn_distance_to_heldout is the training images' value).",
  "pixel_range_violation": "mean amount by which pixels leave [-1, 1]: rewards clean images.",
  "tradeoff": "(M_MAP - M) / (NN distance - its MAP value): memorisation removed per unit of the "
  "quality proxy.",
}


def _tile(imgs, shape):
  """Row of images ``(K, D)`` → one ``(H, K·W, C)`` strip scaled to [0, 1]."""
  imgs = np.clip((np.asarray(imgs).reshape((-1,) + tuple(shape)) + 1) / 2, 0, 1)
  return np.concatenate(list(imgs), axis=1)


def plot_grid(path, keep, gen_map, train, shape, k):
  """Rows: training images | MAP | each sampler at each η (first posterior sample, same x0)."""
  rows = [("train (first)", train[:k]), ("MAP", gen_map[0, :k])]
  for eta in sorted(keep):
    rows += [
      (f"{name[:6].capitalize()}. η={eta:g}", kept["gen"][0, :k])
      for name, kept in keep[eta].items()
    ]
  fig, axes = plt.subplots(len(rows), 1, figsize=(k * 0.9, len(rows) * 1.0))
  for a, (title, imgs) in zip(np.atleast_1d(axes), rows):
    strip = _tile(imgs, shape)
    a.imshow(
      strip[..., 0] if shape[-1] == 1 else strip,
      cmap="gray",
      vmin=0,
      vmax=1,
      interpolation="nearest",
    )
    a.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    a.set_xticks([])
    a.set_yticks([])
  plotting.save(fig, path, tight=dict(rect=(0.08, 0.0, 1.0, 1.0)))


def plot_curves(path, rows, map_metrics, names, c):
  """M_c (headline c), NN distance and held-out loss against η; memorisation against quality."""
  nn_dist = lambda m: m["nn_distance_to_heldout_mean"]
  m_c = lambda m: pipeline.m_c(m, c)
  panels = (
    (pipeline.m_label(c), m_c),
    ("mean NN distance to held-out", nn_dist),
    ("held-out-image FM loss", lambda m: m["heldout_fm_loss"]["mean"]),
  )
  markers = dict(zip(names, pipeline.MARKERS))
  fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
  for a, (title, f) in zip(axes, panels):
    pipeline.eta_panel(a, rows, map_metrics, names, title, f, label=str, eta_ticks=False)
  axes[0].legend(fontsize=8)
  a = axes[3]
  for name in names:
    kept = [r[name] for r in rows if name in r]
    a.plot([nn_dist(m) for m in kept], [m_c(m) for m in kept], markers[name] + "-", label=name)
  a.plot([nn_dist(map_metrics)], [m_c(map_metrics)], "k*", ms=10, label="MAP")
  a.set(
    xlabel="NN distance to held-out (quality cost →)",
    ylabel=pipeline.m_label(c),
    title="memorisation vs quality",
  )
  a.legend(fontsize=8)
  plotting.save(fig, path, dpi=100)


def summarise(results: dict, workdir: str) -> str:
  """Timings, the MAP's M_1/3 and NN distance, and one line per η."""
  if results.get("train_only"):
    return (
      f"outputs: {workdir}\ntrained in {results['train_seconds']:.1f}s; checkpoint "
      f"{results['checkpoint_dir']}"
    )
  m, c = results["map"], pipeline.headline_c(results)
  label = pipeline.m_label(c)
  lines = [
    f"outputs: {workdir}",
    f"train {m['train_seconds']:.1f}s, sweep {results['sweep_seconds']:.1f}s; "
    f"MAP {label} = {pipeline.m_c(m, c):.3f}, "
    f"NN-dist to held-out = {m['nn_distance_to_heldout_mean']:.3f} "
    f"(train images: {results['reference_train_images_nn_distance_to_heldout']:.3f}); "
    f"held-out real images {label} = {pipeline.m_c(m['baseline_true_samples'], c):.3f}",
  ]
  for d in results["draws"]:
    f = d["fit"]
    lines.append(
      f"draw {d['draw']}: ||grad L|| {f['grad_norm_before_refine']:.3g} -> {f['grad_norm']:.3g}"
    )
  for row in results.get("correction_agreement", {}).get("per_eta", []):
    cos = [p["cosine"]["mean"] for p in row["per_draw"] if p["cosine"]]
    lines.append(f"η={row['eta']:g}: cos(θ_R − θ_E) across draws {cos}")
  names = tuple(results["config"]["posterior"]["samplers"])
  for row in results["sweep"]:
    kept = [n for n in names if n in row]
    if not kept:
      continue
    m_c = " / ".join(f"{n[0].upper()} {pipeline.m_c(row[n], c):.3f}" for n in kept)
    nn = " / ".join(f"{n[0].upper()} {row[n]['nn_distance_to_heldout_mean']:.3f}" for n in kept)
    failed = ", ".join(
      f"{n} {s['failed']}/{s['total']}"
      for n, s in row["sampling"].items()
      if s["failed"] or "by_result" in s
    )
    lines.append(
      f"η={row['eta']:g}: {label} {m_c}; NN-dist {nn}; failed {failed} "
      f"({row['paired']['seconds']:.1f}s)"
    )
  return "\n".join(lines)


def run(cfg, workdir: str) -> dict:
  """UNet MAP → first-layer Laplace fit → η sweep; writes results.json and figures."""
  os.makedirs(workdir, exist_ok=True)
  with common.x64(cfg.x64):
    dtype = jnp.float64 if cfg.x64 else jnp.float32
    k_data, k_map, k_post, k_sweep = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)
    train, held, shape = load_images(cfg.data, k_data)
    ckpt = os.path.abspath(
      cfg.train.restore or cfg.train.checkpoint_dir or os.path.join(workdir, "checkpoints")
    )
    with common.Timer() as t_train:
      u, params, res = train_map(cfg, train, shape, k_map, ckpt, held)
    if cfg.get("train_only", False):  # the checkpoint alone (e.g. for memjax-audit)
      results = {
        "config": cfg.to_dict(),
        "checkpoint_dir": ckpt,
        "train_only": True,
        "train_seconds": t_train.seconds,
        "resumed_from_step": res.resumed_from,
        "final_train_loss": float(np.nanmean(res.losses[-100:])),
      }
      common.write_json(os.path.join(workdir, common.RESULTS), results)
      return results
    held_d = jnp.asarray(held, dtype)
    extra = make_extra_metrics(held_d)
    with common.Timer() as t_sweep:
      draws, agreement = pipeline.run_draws(
        cfg,
        u,
        params,
        train,
        held,
        tuple(jax.random.split(k_post, 3)),
        k_sweep,
        lambda f: extra,
        dtype,
      )
    sweep = draws[0].sweep
    ref = extra(None, None, jnp.asarray(train, dtype))
    rows = sweep.rows
    c = cfg.eval.headline_c
    paths = {
      pipeline.m_label(c): pipeline.m_path(c),
      "nn_distance_to_heldout": ("nn_distance_to_heldout_mean",),
      "heldout_fm_loss": ("heldout_fm_loss", "mean"),
    }
    claims_fn = lambda r: pipeline.claims(r, paths, cfg.eval.compare)
    names = tuple(cfg.posterior.samplers)
    nn_path = ("nn_distance_to_heldout_mean",)
    m13 = pipeline.m_path(c)
    results = {
      "config": cfg.to_dict(),
      "metric_notes": METRIC_NOTES,
      "image_shape": list(shape),
      "checkpoint_dir": ckpt,
      "map": {
        **draws[0].info,
        **sweep.map_metrics,
        "train_seconds": t_train.seconds,
        "resumed_from_step": res.resumed_from,
        "final_train_loss": float(np.nanmean(res.losses[-100:])),
      },
      "reference_train_images_nn_distance_to_heldout": ref["nn_distance_to_heldout_mean"],
      "sweep_seconds": t_sweep.seconds,
      "sweep": rows,
      "claims": claims_fn(rows),
      "tradeoff": pipeline.tradeoff(rows, sweep.map_metrics, nn_path, m13, names),
      "draws": pipeline.draws_block(draws, claims_fn),
      "correction_agreement": agreement,
    }
    plot_grid(
      os.path.join(workdir, FIGURES[0]), sweep.keep, sweep.gen_map, train, shape, cfg.eval.num_show
    )
    plot_curves(
      os.path.join(workdir, FIGURES[1]),
      rows,
      sweep.map_metrics,
      tuple(cfg.posterior.samplers),
      cfg.eval.headline_c,
    )
    common.write_json(os.path.join(workdir, common.RESULTS), results)
  return results


if __name__ == "__main__":
  common.main(run, CONFIG, summarise)
