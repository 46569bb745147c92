r"""Image-scale memorisation: Euclidean vs Riemannian Laplace over the FIRST UNet layer.

Train a flow-matching UNet on a small image subset until it memorises (orbax checkpoint;
``--config.restore=DIR`` reuses a finished one), fit Lanczos on the curvature loss of the
first conv layer (rest frozen at the MAP), draw paired Euclidean (θ* + v) and Riemannian
(geodesic γ(1)) samples for every η from the SAME z, generate images from FIXED noise x0 with
every sampled model, and report M_c over the c grid plus quality proxies (mean nearest-neighbour
distance of generated images to a held-out set; held-out-image FM loss)::

  python -m experiments.images_memorisation --config=experiments/configs/images_memorisation.py        # digits, CPU
  python -m experiments.images_memorisation --config=experiments/configs/images_memorisation.py:cifar10

Failed geodesics are counted and excluded from BOTH posteriors (paired), never replaced.
"""
from __future__ import annotations

import os

from absl import app, logging
import jax
import jax.numpy as jnp
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from ml_collections import config_flags  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from experiments import common, laplace_toy  # noqa: E402
from memjax import curvature, data, laplace, memorisation, nets, sampling, training, unet  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "images_memorisation.py"))


def load_images(cfg, key):
  """``(train (n, D), heldout (m, D), image_shape)``, flattened float32 in [−1, 1]; held-out disjoint from train."""
  classes = tuple(cfg.classes) or None
  if cfg.dataset == "digits":
    x, y = data.load_digits()
    idx = np.flatnonzero(np.isin(y, classes)) if classes else np.arange(len(x))
    perm = idx[np.asarray(jax.random.permutation(key, len(idx)))]
    train, held = x[perm[:cfg.num_train]], x[perm[cfg.num_train:cfg.num_train + cfg.num_heldout]]
  else:
    x, y = data.load_tfds(cfg.dataset, "train", max_examples=max(20 * cfg.num_train, 5000))
    train, _ = data.class_subset(key, x, y, cfg.num_train, classes)
    held, _ = data.load_tfds(cfg.dataset, "test", max_examples=cfg.num_heldout)
  shape = train.shape[1:]
  return train.reshape(len(train), -1), held.reshape(len(held), -1), shape


def train_map(cfg, train, shape, key, ckpt_dir):
  """Flow-matching MAP (EMA params) of the UNet; resumes / skips from ``ckpt_dir``. Returns ``(u, params, res)``."""
  k_init, k_train = jax.random.split(key)
  module, u = unet.unet_field(shape, widths=tuple(cfg.widths), num_res_blocks=cfg.num_res_blocks,
                              time_dim=cfg.time_dim, attention=cfg.attention, groups=cfg.groups, conv=cfg.conv)
  params = nets.init_params(module, k_init, train.shape[1], jnp.float32)
  opt = optax.adam(optax.warmup_cosine_decay_schedule(0.0, cfg.lr, min(200, cfg.steps // 10 + 1), cfg.steps,
                                                      cfg.lr * 0.05))
  res = training.train(training.fm_objective(u, jnp.asarray(train), cfg.batch_size), params, opt, cfg.steps,
                       k_train, chunk_size=min(250, cfg.steps), ema_decay=cfg.ema_decay, checkpoint_dir=ckpt_dir,
                       progress=cfg.progress, metadata={"config": cfg.to_dict()})
  return u, res.state.ema_params, res


def build_posterior(cfg, u, params, train, held, key):
  """First-layer tangent Gaussian and the jitted pieces ``laplace_toy.run_eta_sweep`` needs (float64 with ``cfg.x64``)."""
  k_trip, k_lan, k_held = jax.random.split(key, 3)
  dtype = jnp.float64 if cfg.x64 else jnp.float32
  params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
  train64, held64 = jnp.asarray(train, dtype), jnp.asarray(held, dtype)
  subset = curvature.param_subset(params, cfg.select)
  x1, x0, t = curvature.make_triples(k_trip, train64, cfg.num_triples)
  loss_fn = curvature.curvature_loss(u, params, x1, x0, t, subset=subset, alpha=cfg.alpha, loss_scale=cfg.loss_scale)
  theta_map = subset.theta
  with common.Timer() as t_lan:
    eig = jax.block_until_ready(laplace.fit_eigenpairs(loss_fn, theta_map, cfg.lanczos_k, k_lan))
  held_trip = curvature.make_triples(k_held, held64, cfg.num_heldout_triples)
  held_loss = jax.jit(jax.vmap(lambda th: training.fm_loss(u, subset.merge(th), *held_trip)))

  @jax.jit
  def generate(thetas, x0):
    return sampling.generate_multi(u, jax.vmap(subset.merge)(thetas), x0, solver=cfg.gen_solver,
                                   rtol=cfg.gen_rtol, atol=cfg.gen_atol)

  info = {"subset": list(subset.selected_names), "num_subset_params": int(theta_map.shape[0]),
          "num_params": nets.num_params(params), "lanczos_seconds": t_lan.seconds,
          "ritz_values": np.asarray(eig.values), "ritz_residuals": np.asarray(eig.residuals),
          "loss_at_map": float(loss_fn(theta_map))}
  logging.info("first layer: %d of %d params; top Ritz %s", info["num_subset_params"], info["num_params"],
               np.asarray(eig.values[:5]))
  return dict(apply_fn=u, params=params, subset=subset, loss_fn=loss_fn, theta_map=theta_map, eig=eig,
              held_loss=held_loss, batch_loss=jax.jit(jax.vmap(loss_fn)), generate=generate, train=train64,
              info=info)


def make_extra_metrics(held64):
  def extra(post, thetas, ok, xs):
    del post, thetas, ok
    nn = memorisation.nearest_two(jnp.asarray(xs), held64)
    return {"nn_distance_to_heldout_mean": float(jnp.mean(nn.d1)),
            "pixel_range_violation": float(jnp.mean(jnp.maximum(jnp.abs(jnp.asarray(xs)) - 1.0, 0.0)))}
  return extra


def _tile(imgs, shape):
  """Row of images ``(K, D)`` → one ``(H, K·W, C)`` strip scaled to [0, 1]."""
  imgs = np.clip((np.asarray(imgs).reshape((-1,) + tuple(shape)) + 1) / 2, 0, 1)
  return np.concatenate(list(imgs), axis=1)


def plot_grid(path, keep, gen_map, train, shape, k):
  """Rows: training images | MAP | Euclidean η | Riemannian η (first posterior sample, same x0)."""
  rows = [("train (first)", train[:k]), ("MAP", gen_map[0, :k])]
  for eta in sorted(keep):
    rows += [(f"Euclid η={eta:g}", keep[eta]["gen_e"][0, :k]), (f"Riem. η={eta:g}", keep[eta]["gen_r"][0, :k])]
  fig, axes = plt.subplots(len(rows), 1, figsize=(k * 0.9, len(rows) * 1.0))
  for a, (title, imgs) in zip(np.atleast_1d(axes), rows):
    strip = _tile(imgs, shape)
    a.imshow(strip[..., 0] if shape[-1] == 1 else strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    a.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    a.set_xticks([]), a.set_yticks([])
  fig.tight_layout(rect=(0.08, 0.0, 1.0, 1.0))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_curves(path, rows, map_metrics):
  etas = [r["eta"] for r in rows if "euclidean" in r]
  panels = (("M_1/3", lambda m: m["memorisation"]["M_c"][3]),
            ("mean NN distance to held-out", lambda m: m["nn_distance_to_heldout_mean"]),
            ("held-out-image FM loss", lambda m: m["heldout_fm_loss"]["mean"]))
  fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
  for a, (title, f) in zip(axes, panels):
    for kind, mk in (("euclidean", "o-"), ("riemannian", "s-")):
      a.plot(etas, [f(r[kind]) for r in rows if kind in r], mk, label=kind)
    a.axhline(f(map_metrics), color="k", ls=":", label="MAP")
    a.set(xscale="log", xlabel="η", title=title)
  axes[0].legend(fontsize=8)
  a = axes[3]
  for kind, mk in (("euclidean", "o"), ("riemannian", "s")):
    a.plot([f(r[kind]) for r in rows if kind in r for f in [panels[1][1]]],
           [r[kind]["memorisation"]["M_c"][3] for r in rows if kind in r], mk + "-", label=kind)
  a.plot([panels[1][1](map_metrics)], [map_metrics["memorisation"]["M_c"][3]], "k*", ms=10, label="MAP")
  a.set(xlabel="NN distance to held-out (quality cost →)", ylabel="M_1/3", title="memorisation vs quality")
  a.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  del argv
  cfg = _CONFIG.value
  jax.config.update("jax_enable_x64", bool(cfg.x64))
  out = common.make_run_dir("images_memorisation", workdir=cfg.workdir or None)
  k_data, k_map, k_post, k_sweep = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)
  train, held, shape = load_images(cfg, k_data)
  ckpt = os.path.abspath(cfg.restore or os.path.join(out, "checkpoints"))
  with common.Timer() as t_train:
    u, params, res = train_map(cfg, train, shape, k_map, ckpt)
  post = build_posterior(cfg, u, params, train, held, k_post)
  held64 = jnp.asarray(held, jnp.float64 if cfg.x64 else jnp.float32)
  with common.Timer() as t_sweep:
    rows, map_metrics, keep, gen_map = laplace_toy.run_eta_sweep(post, cfg, k_sweep, make_extra_metrics(held64))
  ref = make_extra_metrics(held64)(None, None, None, jnp.asarray(train, held64.dtype))
  results = {"config": cfg.to_dict(), "image_shape": list(shape), "checkpoint_dir": ckpt,
             "map": {**post["info"], **map_metrics, "train_seconds": t_train.seconds,
                     "resumed_from_step": res.resumed_from, "final_train_loss": float(np.nanmean(res.losses[-100:]))},
             "reference_train_images_nn_distance_to_heldout": ref["nn_distance_to_heldout_mean"],
             "sweep_seconds": t_sweep.seconds, "sweep": rows,
             "claims": {"M_1/3": laplace_toy.comparison(rows, ("memorisation", "M_c", 3)),
                        "nn_distance_to_heldout": laplace_toy.comparison(rows, ("nn_distance_to_heldout_mean",)),
                        "heldout_fm_loss": laplace_toy.comparison(rows, ("heldout_fm_loss", "mean"))}}
  plot_grid(os.path.join(out, "images_grid.png"), keep, gen_map, train, shape, cfg.num_show)
  plot_curves(os.path.join(out, "images_curves.png"), rows, map_metrics)
  js = common.write_json(os.path.join(out, "results.json"), results)
  print(f"outputs: {out}\nresults: {js}")
  print(f"train {t_train.seconds:.1f}s, sweep {t_sweep.seconds:.1f}s; "
        f"MAP M_1/3 = {map_metrics['memorisation']['M_c'][3]:.3f}, "
        f"NN-dist to held-out = {map_metrics['nn_distance_to_heldout_mean']:.3f} (train images: {ref['nn_distance_to_heldout_mean']:.3f})")
  for row in rows:
    if "euclidean" in row:
      e, r = row["euclidean"], row["riemannian"]
      print(f"η={row['eta']:g}: M_1/3 E {e['memorisation']['M_c'][3]:.3f} / R {r['memorisation']['M_c'][3]:.3f}; "
            f"NN-dist E {e['nn_distance_to_heldout_mean']:.3f} / R {r['nn_distance_to_heldout_mean']:.3f}; "
            f"geodesics failed {row['geodesics']['failed']}/{row['geodesics']['total']} ({row['geodesics']['seconds']:.1f}s)")


if __name__ == "__main__":
  app.run(main)
