r"""First-layer Riemannian-Laplace geodesics on an image UNet: throughput and overhead over HVPs.

Prints posterior samples per second (S vmapped geodesics, Tsit5 + PID) and the overhead ratio
geodesic wall time ÷ (#RHS × one HVP), #RHS = 6 per Tsit5 step (FSAL), counted as in
``benchmarks/geodesics.py`` (batched: max steps × vmapped HVP; per-sample: Σ steps × single HVP).
The UNet is randomly initialised with a perturbed output layer (timings do not depend on training).

  python benchmarks/images.py                  # digits 8×8 UNet (16, 32), CPU
  python benchmarks/images.py --size=large     # CIFAR 32×32×3 UNet (64, 128, 256) + attention, GPU
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import timing  # benchmarks/timing.py (the script directory is on sys.path)
from absl import app, flags

from memjax import laplace, linalg, nets, unet

_SIZE = flags.DEFINE_enum("size", "small", ["small", "large"], "problem size")
_X64 = flags.DEFINE_bool(
  "x64", True, "float64 (the experiment's posterior precision); False for float32"
)
_REPEATS = flags.DEFINE_integer("repeats", 2, "timed repetitions (best of)")

SIZES = {
  "small": dict(
    shape=(8, 8, 1),
    widths=(16, 32),
    attention=False,
    groups=8,
    conv="matmul",
    num_triples=128,
    S=6,
    eta=0.2,
    k=10,
  ),
  "large": dict(
    shape=(32, 32, 3),
    widths=(64, 128, 256),
    attention=True,
    groups=32,
    conv="lax",
    num_triples=256,
    S=16,
    eta=0.2,
    k=10,
  ),
}


def main(argv):
  del argv
  jax.config.update("jax_enable_x64", _X64.value)
  dtype = jnp.float64 if _X64.value else jnp.float32
  s = SIZES[_SIZE.value]
  key = jax.random.PRNGKey(0)
  module, u = unet.unet_field(
    s["shape"],
    widths=s["widths"],
    attention=s["attention"],
    groups=s["groups"],
    conv=s["conv"],
    num_res_blocks=2 if _SIZE.value == "large" else 1,
  )
  d = module.dim
  params = nets.init_params(module, key, d, dtype)

  def perturb(path, x):  # non-zero output layer so the loss depends on the first layer
    if "conv_out" in jax.tree_util.keystr(path):
      return x + 0.05 * jax.random.normal(key, x.shape, x.dtype)
    return x

  params = jax.tree_util.tree_map_with_path(perturb, params)
  train = jax.random.uniform(jax.random.PRNGKey(1), (64, d), dtype, -1.0, 1.0)
  lfit = laplace.fit(
    u,
    params,
    train,
    jax.random.PRNGKey(2),
    select=unet.FIRST_LAYER_SELECT,
    k=s["k"],
    alpha=1.0,
    num_triples=s["num_triples"],
    loss_scale=1.0,
    lanczos_key=jax.random.PRNGKey(3),
  )
  loss_fn, theta = lfit.loss_fn, lfit.theta_map
  v = laplace.sample_velocities(lfit.eig, lfit.alpha, s["eta"], jax.random.PRNGKey(4), s["S"])
  hvp1 = jax.jit(lambda th, w: linalg.hvp(loss_fn, th, w))
  hvp_b = jax.jit(jax.vmap(lambda w: linalg.hvp(loss_fn, theta, w)))
  geo = jax.jit(lambda w: laplace.riemannian(loss_fn, theta, w, rtol=1e-5, atol=1e-7))
  t_hvp1, _ = timing.measure(lambda: hvp1(theta, v[0]), repeats=_REPEATS.value)
  t_hvpb, _ = timing.measure(lambda: hvp_b(v), repeats=_REPEATS.value)
  t_geo, res = timing.measure(lambda: geo(v), repeats=_REPEATS.value)
  steps = np.asarray(res.num_steps)
  rhs_batched = 6 * int(steps.max()) + 1
  rhs_single = 6 * int(steps.sum()) + len(steps)
  print(f"device: {jax.devices()[0].device_kind}  dtype: {dtype.__name__}  size: {_SIZE.value}")
  print(
    f"UNet {s['shape']} widths {s['widths']}: {nets.num_params(params)} params; "
    f"first layer P_B = {theta.shape[0]}; loss points B = {s['num_triples']}; "
    f"samples S = {s['S']}; "
    f"failed = {int(np.sum(~np.asarray(res.success)))}"
  )
  print(f"steps per geodesic: mean {steps.mean():.1f}, max {steps.max()}")
  print(
    f"one HVP: {t_hvp1 * 1e3:.3f} ms; vmapped HVP over S: {t_hvpb * 1e3:.3f} ms "
    f"(batching gain {s['S'] * t_hvp1 / t_hvpb:.2f}x)"
  )
  print(f"geodesics: {t_geo:.3f} s for S={s['S']}  ->  {s['S'] / t_geo:.3f} Riemannian samples / s")
  print(f"overhead ratio (batched)    = {t_geo / (rhs_batched * t_hvpb):.3f}")
  print(f"overhead ratio (per-sample) = {t_geo / (rhs_single * t_hvp1):.3f}")


if __name__ == "__main__":
  app.run(main)
