"""Shared pipeline for the Riemannian-vs-Euclidean Laplace toy experiments (1D two-point and 2D mixture).

MAP by flow matching → frozen-triple curvature loss → Lanczos → for each η, paired
Euclidean (θ* + v) and Riemannian (geodesic γ(1)) samples from the same v →
generate with every sampled model from fixed noise → metrics. The library calls
live in ``memjax``; this module only wires them and collects numbers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from experiments import common
from memjax import curvature, data, laplace, memorisation, metrics, sampling, training


def build_posterior(cfg, train, key):
  """Train the MAP and fit the tangent Gaussian; returns a dict of the pieces (float64 posterior stage)."""
  k_fit, k_trip, k_lan, k_held = jax.random.split(key, 4)
  with common.Timer() as t_fit:
    apply_fn, params, losses, _ = common.fit_fm(
        train, key=k_fit, hidden=cfg.hidden, time_dim=cfg.time_dim, steps=cfg.steps,
        batch_size=cfg.batch_size, lr=cfg.lr, ema_decay=cfg.ema_decay, progress=cfg.progress,
        checkpoint_dir=cfg.get("checkpoint_dir") or None)
  params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
  train64 = jnp.asarray(train, jnp.float64)
  subset = curvature.param_subset(params, cfg.select or None)
  x1, x0, t = curvature.make_triples(k_trip, train64, cfg.num_triples)
  loss_fn = curvature.curvature_loss(apply_fn, params, x1, x0, t, subset=subset, alpha=cfg.alpha,
                                     loss_scale=cfg.loss_scale)
  theta_map = subset.theta
  with common.Timer() as t_lan:
    eig = laplace.fit_eigenpairs(loss_fn, theta_map, cfg.lanczos_k, k_lan)
  held = curvature.make_triples(k_held, train64, cfg.num_heldout_triples)
  held_loss = jax.jit(jax.vmap(lambda th: training.fm_loss(apply_fn, subset.merge(th), *held)))
  batch_loss = jax.jit(jax.vmap(loss_fn))

  @jax.jit
  def generate(thetas, x0):
    return sampling.generate_multi(apply_fn, jax.vmap(subset.merge)(thetas), x0, solver=cfg.gen_solver,
                                   rtol=cfg.gen_rtol, atol=cfg.gen_atol)

  info = {"num_params": int(theta_map.shape[0]), "train_seconds": t_fit.seconds,
          "lanczos_seconds": t_lan.seconds, "final_train_loss": float(np.mean(losses[-100:])),
          "ritz_values": np.asarray(eig.values), "ritz_residuals": np.asarray(eig.residuals),
          "loss_at_map": float(loss_fn(theta_map)), "heldout_fm_loss_map": float(held_loss(theta_map[None])[0])}
  logging.info("MAP: %d params, top Ritz values %s", info["num_params"], np.asarray(eig.values[:5]))
  return dict(apply_fn=apply_fn, params=params, subset=subset, loss_fn=loss_fn, theta_map=theta_map,
              eig=eig, held_loss=held_loss, batch_loss=batch_loss, generate=generate, train=train64, info=info)


def evaluate_models(post, thetas, ok, x0, cfg, extra_metrics) -> tuple[dict, np.ndarray]:
  """Metrics of the models ``thetas[ok]`` from a fixed-size stack ``thetas (S, P)``.

  Generation and losses run on the whole stack (static shapes: one compilation
  for every η); only the rows with ``ok`` enter the numbers. Returns (numbers,
  generated samples of the kept models ``(S_ok, N, D)``).
  """
  gen = post["generate"](thetas, x0)
  ok = np.asarray(ok)
  gen_ok = np.asarray(gen.success)[ok]
  xs_models = np.asarray(gen.x)[ok]
  xs = xs_models[gen_ok]                          # pooled successful samples (M, D)
  r = memorisation.nn_ratio(jnp.asarray(xs), post["train"])
  out = {"num_models": int(ok.sum()),
         "generation_solver": sampling.summarise(jax.tree.map(lambda a: np.asarray(a)[ok], gen)),
         "heldout_fm_loss": _stats(np.asarray(post["held_loss"](thetas))[ok]),
         "curvature_loss": _stats(np.asarray(post["batch_loss"](thetas))[ok]),
         "memorisation": memorisation.summary(r, cfg.cs)}
  out.update(extra_metrics(post, thetas, ok, xs))
  return out, xs_models


def _stats(x) -> dict:
  x = np.asarray(x)
  return {"mean": float(np.mean(x)), "median": float(np.median(x)), "std": float(np.std(x))}


def run_eta_sweep(post, cfg, key, extra_metrics):
  """Paired Euclidean/Riemannian samples for every η in ``cfg.etas`` (same z for all η).

  Failed geodesics are counted and excluded from BOTH posteriors' metrics (the
  comparison stays paired); nothing is replaced.
  """
  k_v, k_x0 = jax.random.split(key)
  x0 = jax.random.normal(k_x0, (cfg.num_gen, post["train"].shape[1]), post["theta_map"].dtype)
  riem_kw = dict(solver=cfg.geo_solver, rtol=cfg.geo_rtol, atol=cfg.geo_atol, max_steps=cfg.geo_max_steps)
  sample = jax.jit(lambda eta: laplace.paired_samples(post["loss_fn"], post["theta_map"], post["eig"], cfg.alpha,
                                                      eta, k_v, cfg.num_posterior, mode=cfg.mode, **riem_kw))
  rows, keep = [], {}
  for eta in tqdm.tqdm(cfg.etas, desc="eta sweep", disable=not cfg.progress):
    with common.Timer() as t_geo:
      v, theta_e, res = jax.block_until_ready(sample(jnp.asarray(eta, post["theta_map"].dtype)))
    fails = laplace.summarise_failures(res)
    ok = np.asarray(res.success)
    if fails["failed"]:
      logging.warning("eta=%g: %d/%d geodesics failed %s; excluded from both posteriors (paired).",
                      eta, fails["failed"], fails["total"], fails["by_result"])
    row = {"eta": float(eta), "geodesics": {**fails, "seconds": t_geo.seconds,
                                            "num_steps": _stats(res.num_steps),
                                            "speed_drift_max": float(np.max(np.asarray(res.speed_drift)[ok]))
                                            if ok.any() else None},
           "tangent_norm": _stats(jnp.linalg.norm(v, axis=-1)),
           "riemannian_displacement": _stats(jnp.linalg.norm(res.theta - post["theta_map"][None], axis=-1))}
    if ok.any():
      row["euclidean"], gen_e = evaluate_models(post, theta_e, ok, x0, cfg, extra_metrics)
      row["riemannian"], gen_r = evaluate_models(post, res.theta, ok, x0, cfg, extra_metrics)
      keep[float(eta)] = dict(theta_e=np.asarray(theta_e)[ok], theta_r=np.asarray(res.theta)[ok],
                              gen_e=gen_e, gen_r=gen_r)
    logging.info("eta=%g: geodesics %.1fs (max %d steps, %d failed); %s", eta, t_geo.seconds,
                 int(np.max(np.asarray(res.num_steps))), fails["failed"],
                 {k: row[k]["heldout_fm_loss"]["mean"] for k in ("euclidean", "riemannian") if k in row})
    rows.append(row)
  theta_map_stack = jnp.broadcast_to(post["theta_map"], (cfg.num_posterior,) + post["theta_map"].shape)
  one = np.arange(cfg.num_posterior) == 0
  map_metrics, gen_map = evaluate_models(post, theta_map_stack, one, x0, cfg, extra_metrics)
  return rows, map_metrics, keep, gen_map


def comparison(rows, key_path) -> dict:
  """For each η: (Euclidean, Riemannian) values of a nested metric and whether Riemannian is lower."""
  def get(d, path):
    for k in path:
      d = d[k]
    return d
  out = []
  for row in rows:
    if "euclidean" not in row:
      continue
    e, r = get(row["euclidean"], key_path), get(row["riemannian"], key_path)
    out.append({"eta": row["eta"], "euclidean": e, "riemannian": r, "riemannian_lower": bool(r < e)})
  return {"path": "/".join(map(str, key_path)), "per_eta": out,
          "riemannian_lower_at_all_eta": bool(out) and all(o["riemannian_lower"] for o in out)}


def field_grid(apply_fn, subset, thetas, xs, ts):
  """``u_θs(x, t)`` on a grid for a stack of flat ``thetas``: returns ``(S, T, X)`` (1D fields)."""
  tt, xx = jnp.meshgrid(ts, xs, indexing="ij")
  x, t = xx.reshape(-1, 1), tt.reshape(-1)
  f = jax.vmap(lambda th: apply_fn(subset.merge(th), x, t)[:, 0].reshape(tt.shape))
  return np.asarray(f(thetas))


def target_log_prob_fn(gmm):
  return lambda x: data.mixture_log_prob(gmm, jnp.reshape(x, (-1, gmm.dim)))


__all__ = ["build_posterior", "run_eta_sweep", "comparison", "field_grid", "metrics", "target_log_prob_fn"]
