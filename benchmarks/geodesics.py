r"""Throughput of vmapped Riemannian-Laplace geodesics and their overhead over raw HVPs.

Prints, from one run:
  * posterior samples per second for S vmapped geodesics (Tsit5 + PID),
  * overhead ratio  = geodesic wall time ÷ (#RHS evaluations × one jitted HVP),
    with #RHS = 6 per step (Tsit5 is FSAL: 6 new stages per step), counted two ways:
      - batched: max_s steps_s × 6 RHS of the vmapped batch (what the vmapped while-loop runs),
      - per-sample: Σ_s steps_s × 6 single-sample HVPs (cost if each geodesic ran alone).

  python benchmarks/geodesics.py                 # CPU-sized
  python benchmarks/geodesics.py --size=large    # GPU: ~128k-param MLP, 4096-point loss, S=64
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import timing  # benchmarks/timing.py (the script directory is on sys.path)
from absl import app, flags

from memjax import data, laplace, linalg, nets

_SIZE = flags.DEFINE_enum("size", "small", ["small", "large"], "problem size")
_X64 = flags.DEFINE_bool("x64", True, "float64 (the tests' precision); False for float32")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repetitions (best of)")

SIZES = {
  "small": dict(hidden=(64, 64), num_triples=256, S=8, eta=0.1, k=10),
  "large": dict(hidden=(256, 256, 224), num_triples=4096, S=64, eta=0.1, k=20),
}


def main(argv):
  del argv
  jax.config.update("jax_enable_x64", _X64.value)
  dtype = jnp.float64 if _X64.value else jnp.float32
  s = SIZES[_SIZE.value]
  key = jax.random.PRNGKey(0)
  gmm = data.ring_mixture(8)
  train, _ = data.sample_mixture(key, gmm, 64)
  train = train.astype(dtype)
  module = nets.MLPField(dim=2, hidden=s["hidden"], time_dim=32)
  params = nets.init_params(module, key, 2, dtype)
  u = nets.velocity_fn(module)
  lfit = laplace.fit(
    u,
    params,
    train,
    jax.random.PRNGKey(1),
    k=s["k"],
    alpha=1.0,
    num_triples=s["num_triples"],
    loss_scale=1.0,
    lanczos_key=jax.random.PRNGKey(2),
  )
  loss_fn, theta = lfit.loss_fn, lfit.theta_map
  p = theta.shape[0]
  v = laplace.sample_velocities(lfit.eig, lfit.alpha, s["eta"], jax.random.PRNGKey(3), s["S"])

  hvp1 = jax.jit(lambda th, w: linalg.hvp(loss_fn, th, w))
  hvp_b = jax.jit(jax.vmap(lambda w: linalg.hvp(loss_fn, theta, w)))
  geo = jax.jit(lambda w: laplace.riemannian(loss_fn, theta, w, rtol=1e-6, atol=1e-8))
  t_hvp1, _ = timing.measure(lambda: hvp1(theta, v[0]), repeats=_REPEATS.value)
  t_hvpb, _ = timing.measure(lambda: hvp_b(v), repeats=_REPEATS.value)
  t_geo, res = timing.measure(lambda: geo(v), repeats=_REPEATS.value)
  steps = np.asarray(res.num_steps)
  rhs_batched = 6 * int(steps.max()) + 1
  rhs_single = 6 * int(steps.sum()) + len(steps)
  print(f"device: {jax.devices()[0].device_kind}  dtype: {dtype.__name__}  size: {_SIZE.value}")
  print(
    f"params P = {p}, loss points B = {s['num_triples']}, samples S = {s['S']}, "
    f"failed = {int(np.sum(~np.asarray(res.success)))}"
  )
  print(f"steps per geodesic: mean {steps.mean():.1f}, max {steps.max()}")
  print(
    f"one HVP: {t_hvp1 * 1e3:.3f} ms; vmapped HVP over S: {t_hvpb * 1e3:.3f} ms "
    f"(batching gain {s['S'] * t_hvp1 / t_hvpb:.2f}x)"
  )
  print(f"geodesics: {t_geo:.3f} s for S={s['S']}  ->  {s['S'] / t_geo:.2f} posterior samples / s")
  print(f"overhead ratio (batched)    = {t_geo / (rhs_batched * t_hvpb):.3f}")
  print(f"overhead ratio (per-sample) = {t_geo / (rhs_single * t_hvp1):.3f}")


if __name__ == "__main__":
  app.run(main)
