r"""The weight-space workflow per seed: wall and compilation seconds, data-as-pytree vs closures.

One "seed" of the Riemannian-Laplace workflow is: frozen triples → ``laplace.fit`` (gradient, L-BFGS
refinement, Lanczos on ``jvp∘grad``, smallest eigenvalue) → ``with_prior`` (the evidence's α) →
``tilt`` → paired Euclidean, Riemannian and linearised posterior samples. Two designs of the same
workflow, each in a FRESH Python process (no persistent compilation cache), seeds 0, 1, 2, ...:

* ``data`` — memjax as shipped: the loss is a pytree (:class:`memjax.curvature.CurvatureLoss`)
  passed traced to module-level compiled programs with ``apply_fn`` static;
* ``closure`` — the design memjax had before (issue 24): the same public functions fed a fresh
  loss closure per fit (``curvature.curvature_loss``, a tilt wrapper, ``laplace.linearised_loss``),
  so every compiled program is keyed on a new closure and every seed recompiles.

Both designs compute the same numbers (checked: the Riemannian samples of every seed agree to
1e-5 relative). Compilation seconds are JAX's own trace + lowering + backend-compile durations
(``jax.monitoring``) during the seed. Two problems: a flow-matching MLP on 2-D data (all weights)
and the digits UNet of the Laplace images experiment (its first conv layer, the frontier's
default subset)::

  python benchmarks/workflow.py                 # small (CPU): smoke-size problems, 3 seeds
  python benchmarks/workflow.py --size=default  # the images/frontier default sizes
  python benchmarks/workflow.py --size=large    # GPU: all UNet weights, larger k
  python benchmarks/workflow.py --size=default --lanczos  # + all-weights UNet Lanczos (P = 152k)

Writes ``runs/bench/workflow.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SIZES = {
  # problem: network (hidden, or widths/time_dim/groups), num_triples, k, lanczos iters,
  # num_posterior, select
  "small": {
    "mlp": dict(hidden=(32, 32), num_triples=16, k=4, iters=12, num_posterior=4, select=""),
    "unet": dict(
      widths=(8,),
      time_dim=8,
      groups=4,
      num_triples=16,
      k=3,
      iters=10,
      num_posterior=2,
      select="['conv_in']",
    ),
  },
  "default": {
    "mlp": dict(hidden=(64, 64), num_triples=64, k=10, iters=30, num_posterior=8, select=""),
    "unet": dict(
      widths=(16, 32),
      time_dim=16,
      groups=8,
      num_triples=32,
      k=20,
      iters=80,
      num_posterior=4,
      select="['conv_in']",
    ),
  },
  "large": {
    "mlp": dict(hidden=(256, 256), num_triples=256, k=20, iters=60, num_posterior=64, select=""),
    "unet": dict(
      widths=(16, 32),
      time_dim=16,
      groups=8,
      num_triples=32,
      k=50,
      iters=130,
      num_posterior=16,
      select="",
    ),
  },
}


def _problem(name: str, spec: dict):
  """``(apply_fn, params, data)`` of a problem, in float32."""
  import jax
  import jax.numpy as jnp
  from sklearn.datasets import load_digits

  from memjax import data, nets, unet

  key = jax.random.PRNGKey(0)
  if name == "mlp":
    x, _ = data.sample_mixture(key, data.ring_mixture(8, 2.0, 0.1, jnp.float32), 64)
    module = nets.MLPField(dim=2, hidden=tuple(spec["hidden"]), time_dim=16)
    return nets.velocity_fn(module), nets.init_params(module, key, 2, jnp.float32), x
  digits = load_digits().images[:16].reshape(16, 64) / 8.0 - 1.0
  module, u = unet.unet_field(
    (8, 8, 1), widths=tuple(spec["widths"]), time_dim=spec["time_dim"], groups=spec["groups"]
  )
  params = nets.init_params(module, key, 64, jnp.float32)
  return u, params, jnp.asarray(digits, jnp.float32)


def _seed_data(apply_fn, params, x, spec, seed):
  """One seed through the library as shipped (the loss as data)."""
  import jax

  from memjax import laplace

  key = jax.random.PRNGKey(100 + seed)
  lfit = laplace.fit(
    apply_fn,
    params,
    x,
    key,
    k=spec["k"],
    alpha=1.0,
    num_triples=spec["num_triples"],
    loss_scale=1.0,
    select=spec["select"] or None,
    num_iters=spec["iters"],
    refine_tol=1e-4,
    refine_max_steps=5,
  )
  lfit = laplace.with_prior(lfit, 2.0)
  lfit = laplace.tilt(lfit)
  geo = {"rtol": 1e-4, "atol": 1e-6, "max_steps": 256}
  _, out = laplace.posterior_samples(
    lfit,
    2.0,
    jax.random.fold_in(key, 7),
    spec["num_posterior"],
    samplers=("euclidean", "riemannian", "linearised"),
    options={"riemannian": geo, "linearised": geo},
    check=False,
  )
  return jax.block_until_ready(out["riemannian"].theta)


def _seed_closure(apply_fn, params, x, spec, seed):
  """The same seed with a fresh loss closure per fit (the design before issue 24)."""
  import jax
  import jax.numpy as jnp

  from memjax import curvature, laplace

  key = jax.random.PRNGKey(100 + seed)
  subset = curvature.param_subset(params, spec["select"] or None)
  triples = curvature.make_triples(key, x, spec["num_triples"])
  loss = curvature.curvature_loss(
    apply_fn, params, *triples, subset=subset, alpha=1.0, loss_scale=1.0
  )
  theta = subset.theta
  ref = laplace.refine_map(loss, theta, tol=1e-4, max_steps=5)
  k_lan = jax.random.fold_in(key, 1)
  eig = laplace.fit_eigenpairs(loss, ref.theta, spec["k"], k_lan, num_iters=spec["iters"])
  eig = eig._replace(values=eig.values - 1.0)
  grad = jax.jit(jax.grad(loss))  # a fresh program per closure, as the closure design had
  jnp.linalg.norm(grad(theta))
  theta0 = ref.theta

  def loss2(th):  # with_prior(α = 2): a wrapper
    return loss(th) + 0.5 * (2.0 - 1.0) * jnp.sum(th**2)

  g0 = jax.jit(jax.grad(loss2))(theta0)

  def tilted(th):
    return loss2(th) - jnp.dot(g0, th - theta0)

  res_fn = curvature.curvature_residual_fn(apply_fn, params, *triples, subset=subset)
  lin = laplace.linearised_loss(res_fn, theta0, 2.0, 1.0)

  def lin_tilted(th):
    return lin(th) - jnp.dot(g0, th - theta0)

  lfit = laplace.LaplaceFit(
    apply_fn, subset, laplace.as_loss(tilted), None, theta0, eig, jnp.asarray(2.0), 0.0, 0.0
  )
  v = laplace.sample_velocities(
    eig, 2.0, 2.0, jax.random.fold_in(key, 7), spec["num_posterior"], check=False
  )
  geo = {"rtol": 1e-4, "atol": 1e-6, "max_steps": 256}
  laplace.euclidean_sampler(lfit, v)
  rie = laplace.riemannian(tilted, theta0, v, **geo)
  laplace.riemannian(lin_tilted, theta0, v, **geo)
  return jax.block_until_ready(rie.theta)


def lanczos_child(size: str) -> None:
  """All-weights Lanczos on the digits UNet: first call (compile + run) vs a second seed's call."""
  import jax

  from memjax import curvature, laplace

  compile_s = [0.0]
  jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: (
      compile_s.__setitem__(0, compile_s[0] + duration)
      if event.startswith("/jax/core/compile/")
      else None
    )
  )
  spec = dict(SIZES["default"]["unet"], k=50, iters=130) if size != "small" else SIZES[size]["unet"]
  apply_fn, params, x = _problem("unet", spec)
  rows = []
  for seed in range(2):
    key = jax.random.PRNGKey(seed)
    data = curvature.curvature_data(
      params, *curvature.make_triples(key, x, spec["num_triples"]), alpha=1.0, loss_scale=1.0
    )
    compile_s[0] = 0.0
    t0 = time.perf_counter()
    eig = laplace.fit_eigenpairs(
      curvature.Loss(apply_fn), data.subset.theta, spec["k"], key, spec["iters"], args=data
    )
    jax.block_until_ready(eig.values)
    rows.append({"seed": seed, "wall_s": time.perf_counter() - t0, "compile_s": compile_s[0]})
  num = int(data.subset.theta.shape[0])
  print(json.dumps({"design": "data", "problem": f"lanczos_all (P={num})", "rows": rows}))


def child(design: str, problem: str, size: str, seeds: int) -> None:
  """Run ``seeds`` seeds of one design and print one JSON line."""
  import jax
  import numpy as np

  compile_s = [0.0]

  def listener(event, duration, **kw):
    if event.startswith("/jax/core/compile/"):
      compile_s[0] += duration

  jax.monitoring.register_event_duration_secs_listener(listener)
  spec = SIZES[size][problem]
  apply_fn, params, x = _problem(problem, spec)
  run = _seed_data if design == "data" else _seed_closure
  rows, thetas = [], []
  for seed in range(seeds):
    compile_s[0] = 0.0
    t0 = time.perf_counter()
    thetas.append(np.asarray(run(apply_fn, params, x, spec, seed)).tolist())
    rows.append({"seed": seed, "wall_s": time.perf_counter() - t0, "compile_s": compile_s[0]})
  print(json.dumps({"design": design, "problem": problem, "rows": rows, "theta": thetas}))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", choices=tuple(SIZES), default="small")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--problems", default="mlp,unet")
  parser.add_argument("--lanczos", action="store_true", help="also all-weights UNet Lanczos")
  parser.add_argument("--child", nargs=3, metavar=("DESIGN", "PROBLEM", "SIZE"))
  args = parser.parse_args()
  if args.child:
    if args.child[1] == "lanczos":
      lanczos_child(args.child[2])
    else:
      child(*args.child, args.seeds)
    return 0
  import numpy as np

  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
  env.setdefault("JAX_PLATFORMS", "cpu")
  out, status = {"size": args.size, "seeds": args.seeds, "results": {}}, 0
  for problem in args.problems.split(","):
    res = {}
    for design in ("closure", "data"):
      cmd = [sys.executable, __file__, "--seeds", str(args.seeds), "--child", design, problem]
      proc = subprocess.run(cmd + [args.size], env=env, capture_output=True, text=True)
      if proc.returncode:
        print(proc.stderr[-4000:])
        return proc.returncode
      res[design] = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = np.asarray(res["closure"]["theta"]), np.asarray(res["data"]["theta"])
    rel = float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))
    if rel > 1e-5:
      print(f"{problem}: the two designs disagree (max rel {rel:.2e})")
      status = 1
    for r in res.values():
      r.pop("theta")
    res["max_rel_difference"] = rel
    out["results"][problem] = res
  if args.lanczos:
    cmd = [sys.executable, __file__, "--child", "data", "lanczos", args.size]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
      print(proc.stderr[-4000:])
      return proc.returncode
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    out["lanczos_all"] = res
    first, second = res["rows"]
    print(
      f"{res['problem']}: first call {first['wall_s']:.1f}s ({first['compile_s']:.1f}s compiling, "
      f"{first['compile_s'] / first['wall_s']:.0%}); a second seed {second['wall_s']:.1f}s "
      f"({second['compile_s']:.1f}s compiling)"
    )
  print(f"size={args.size}, {args.seeds} seeds; seconds per seed (wall / of which compiling)")
  print("| problem | design | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " |")
  print("|---|---|" + "---|" * args.seeds)
  for problem, res in out["results"].items():
    for design in ("closure", "data"):
      cells = [f"{r['wall_s']:.2f} / {r['compile_s']:.2f}" for r in res[design]["rows"]]
      print(f"| {problem} | {design} | " + " | ".join(cells) + " |")
  os.makedirs(os.path.join("runs", "bench"), exist_ok=True)
  with open(os.path.join("runs", "bench", "workflow.json"), "w") as f:
    json.dump(out, f, indent=1)
  return status


if __name__ == "__main__":
  sys.exit(main())
