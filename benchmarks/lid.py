"""FLIPD throughput: points/s (exact trace, 1-probe Hutchinson) and cost relative to a forward pass.

  python benchmarks/lid.py                 # small (CPU, seconds)
  python benchmarks/lid.py --size=large    # D = 3072, wide MLP (for a GPU)

All ratios printed come from the same run on the same device. A 1-probe FLIPD is
one forward pass plus one JVP (``jax.linearize``), so the ratio to a forward pass
should be a small constant (≈ 2–3); the exact trace costs ``D`` JVPs per point.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import timing  # benchmarks/timing.py (the script directory is on sys.path)

from memjax import lid, nets, paths

SIZES = {
  "small": dict(dim=64, hidden=(256, 256, 256), num_points=256, chunk_size=64, repeats=5),
  "large": dict(dim=3072, hidden=(2048, 2048, 2048), num_points=1024, chunk_size=256, repeats=5),
}


def run(size: str) -> dict:
  cfg = SIZES[size]
  d, n = cfg["dim"], cfg["num_points"]
  module = nets.MLPField(dim=d, hidden=cfg["hidden"])
  params = nets.init_params(module, jax.random.PRNGKey(0), d)
  apply_fn = nets.velocity_fn(module)
  x = jax.random.normal(jax.random.PRNGKey(1), (n, d))
  sched, t0 = paths.linear_fm(), 0.95
  key = jax.random.PRNGKey(2)

  forward = jax.jit(lambda p, y: apply_fn(p, y, jnp.full((n,), t0, y.dtype)))

  @functools.partial(jax.jit, static_argnames="n_probes")
  def flipd(p, y, k, n_probes):
    return lid.flipd(
      functools.partial(apply_fn, p),
      y,
      t0,
      sched,
      parameterisation="velocity",
      key=k,
      n_probes=n_probes,
      chunk_size=cfg["chunk_size"],
    )

  t_fwd = timing.median_time(forward, params, x, repeats=cfg["repeats"])
  t_one = timing.median_time(
    lambda p, y, k: flipd(p, y, k, 1), params, x, key, repeats=cfg["repeats"]
  )
  t_exact = timing.median_time(
    lambda p, y, k: flipd(p, y, k, None), params, x, key, repeats=max(1, cfg["repeats"] // 2)
  )
  return {
    "size": size,
    "device": str(jax.devices()[0]),
    "dim": d,
    "num_points": n,
    "forward_points_per_s": n / t_fwd,
    "flipd_1probe_points_per_s": n / t_one,
    "flipd_exact_points_per_s": n / t_exact,
    "ratio_1probe_to_forward": t_one / t_fwd,
    "ratio_exact_to_forward": t_exact / t_fwd,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="small")
  res = run(parser.parse_args().size)
  print(
    f"FLIPD benchmark ({res['size']}: D={res['dim']}, {res['num_points']} points, {res['device']})"
  )
  for k in ("forward_points_per_s", "flipd_1probe_points_per_s", "flipd_exact_points_per_s"):
    print(f"  {k:>28}: {res[k]:12.1f}")
  print(f"  1-probe FLIPD / forward pass time: {res['ratio_1probe_to_forward']:.2f}x")
  print(f"  exact FLIPD / forward pass time:   {res['ratio_exact_to_forward']:.2f}x")


if __name__ == "__main__":
  main()
