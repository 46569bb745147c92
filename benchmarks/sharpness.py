"""Sharpness throughput: top-k Hessian eigenpairs, ||H^Δ s^Δ||² and SAIL iterations per second.

  python benchmarks/sharpness.py                 # small (CPU, seconds)
  python benchmarks/sharpness.py --size=large    # D = 3072, wide MLP (for a GPU)

Each Lanczos eigen-solve costs ``2 m`` products with ``½(H + Hᵀ)`` (a JVP and a VJP each) for
``m`` Lanczos steps (top and bottom spectra). SAIL is timed in its official form (the default
``objective="official"``: ``||g(x + g/||g||)|| + α||x||``, rounds of ``steps_per_round`` Adam steps
with re-seeding) and in the ``objective="finite_difference"`` form; either way one iteration
evaluates ``g = s^Δ`` (a conditional and an unconditional score pass) twice plus the reverse-mode
gradient. ``threshold=-1`` (below any loss) makes every latent run the whole ``sail_iters`` budget.
"""

from __future__ import annotations

import argparse
import functools
import json

import jax
import jax.numpy as jnp
import timing  # benchmarks/timing.py (the script directory is on sys.path)

from memjax import nets, paths, sharpness

SIZES = {
  "small": dict(
    dim=64, hidden=(256, 256, 256), num_points=64, k=4, iters=16, sail_iters=20, repeats=3
  ),
  "large": dict(
    dim=3072, hidden=(2048, 2048, 2048), num_points=256, k=8, iters=32, sail_iters=50, repeats=3
  ),
}


def run(size: str) -> dict:
  cfg = SIZES[size]
  d, n = cfg["dim"], cfg["num_points"]
  module = nets.CondMLPField(dim=d, num_classes=2, hidden=cfg["hidden"])
  params = nets.init_cond_params(module, jax.random.PRNGKey(0), d)
  field = functools.partial(nets.cond_velocity_fn(module), params)
  cs = paths.point_cond_fn(field, paths.linear_fm(), "velocity", "score")
  x = jax.random.normal(jax.random.PRNGKey(1), (n, d))
  t = jnp.asarray(0.5)
  keys = jax.random.split(jax.random.PRNGKey(2), n)

  def score_1(y, tt):
    return cs(y, tt, 1)

  eigs = jax.jit(
    jax.vmap(lambda xx, k: sharpness.hessian_eigs(score_1, xx, t, cfg["k"], k, cfg["iters"]))
  )
  hs = jax.jit(jax.vmap(lambda xx: sharpness.hs_detector(cs, xx, t, 1, 2)))

  def g(xx):
    return sharpness.score_delta(cs, xx, jnp.asarray(0.2), 1, 2)

  def sail_fn(objective):
    opts = dict(
      objective=objective, threshold=-1.0, steps_per_round=10, max_iters=cfg["sail_iters"]
    )
    return jax.jit(lambda xx: sharpness.sail(g, xx, key=jax.random.PRNGKey(3), **opts).x)

  t_eig = timing.median_time(eigs, x, keys, repeats=cfg["repeats"])
  t_hs = timing.median_time(hs, x, repeats=cfg["repeats"])
  t_sail = timing.median_time(sail_fn("official"), x, repeats=cfg["repeats"])
  t_sail_fd = timing.median_time(sail_fn("finite_difference"), x, repeats=cfg["repeats"])
  return {
    "size": size,
    "device": str(jax.devices()[0]),
    "dim": d,
    "num_points": n,
    "k": cfg["k"],
    "lanczos_iters": cfg["iters"],
    "topk_and_bottomk_points_per_s": n / t_eig,
    "hs_detector_points_per_s": n / t_hs,
    "sail_iterations_per_s_per_point": n * cfg["sail_iters"] / t_sail,
    "sail_batch_iterations_per_s": cfg["sail_iters"] / t_sail,
    "sail_finite_difference_iterations_per_s_per_point": n * cfg["sail_iters"] / t_sail_fd,
    "sail_finite_difference_batch_iterations_per_s": cfg["sail_iters"] / t_sail_fd,
  }


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", choices=sorted(SIZES), default="small")
  print(json.dumps(run(parser.parse_args().size), indent=2))
