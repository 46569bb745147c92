r"""memjax against a bare JAX script and PyTorch, on the same problems, in one run.

Two problems (float32 throughout):

* Riemannian-Laplace geodesics of ``G = I + ∇L∇Lᵀ``: ``γ̈ = −g (γ̇ᵀHγ̇)/(1 + gᵀg)`` with
  ``(g, Hγ̇) = jvp(∇L, (γ,), (γ̇,))``, solved on ``[0, 1]`` by dopri5 (rtol 1e-5, atol 1e-7)
  from ``γ(0) = θ*`` (the MLP's initial weights), ``γ̇(0) = v_s ~ 0.05 N(0, I)``. ``L`` is the FM
  loss of ``MLPField(dim=2, hidden=(128, 128, 128))`` (P = 47,010 with its time embedding) on
  ``B`` fixed triples (loss_scale 1, α = 1). Reported as posterior samples per second.
* FLIPD ``D − σ tr∇ε̂ + ||ε̂||²`` at ``y = ψ(t0) x``, ``t0 = 0.05`` on the VP path, for an
  ε-prediction ``MLPField(dim=784, hidden=(256, 256, 256))``: exact trace (``D`` JVPs) and one
  Hutchinson probe, as points per second, plus the cost of one forward pass over the points.

Designs, each called as a user calls it (the same arguments every call; one untimed warm-up call,
then ``--repeats`` timed calls (``3 × --repeats`` for the cheaper FLIPD calls), interleaved across
designs with a rotating order; best of the repeats reported, medians kept in the JSON):

* memjax: ``laplace.riemannian`` / ``lid.flipd`` (``chunk_size=128``) with NO outer ``jax.jit``
  (the 1-probe FLIPD also inside a user's ``jax.jit``, to show the per-call Python cost);
* bare JAX: ``jax.jit(jax.vmap(diffrax.diffeqsolve(...)))`` with the same right-hand side, and for
  FLIPD ``jax.jit(jax.vmap(linearize ε̂; vmap of D JVPs | one probe))``;
* PyTorch (when ``torch`` and ``torchdiffeq`` import; ``pip install -r
  benchmarks/requirements-peers.txt``): ``torch.func`` jvp-of-grad with torchdiffeq dopri5,
  batched over the samples (one shared step size: torchdiffeq's error norm is over the whole
  batch) and a per-sample loop (each sample its own steps, as diffrax under vmap); FLIPD with
  ``torch.func.jvp`` + ``vmap`` in chunks of 128 basis vectors, and one probe. Same weights (the
  JAX parameters copied), data, tolerances and dtype; ``torch.set_num_threads(2)`` on a CPU
  (``--torch-threads``).

memjax and the bare script must agree (max relative difference of ``θ(1)``, of ``θ(1) − θ*`` and
of the FLIPD values ≤ 1e-3, else exit status 1); the PyTorch differences are printed for
information.

  python benchmarks/compare.py                  # small (CPU): B = 1024, S = 8, N = 16
  python benchmarks/compare.py --size=large     # GPU: B = 4096, S = 64, N = 256 (the PyTorch
                                                # per-sample loop runs 8 of the S samples)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from memjax import curvature, data, laplace, lid, nets, paths

SIZES = {
  "small": dict(num_triples=1024, num_velocities=8, num_points=16, loop_samples=8),
  "large": dict(num_triples=4096, num_velocities=64, num_points=256, loop_samples=8),
}
GEO = dict(hidden=(128, 128, 128), eta=0.05, rtol=1e-5, atol=1e-7, max_steps=4096)
FLIPD = dict(dim=784, hidden=(256, 256, 256), t0=0.05, chunk_size=128)
FLIPD_ROUNDS = 3  # FLIPD calls are cheap: this many times --repeats rounds
TOLERANCE = 1e-3  # max relative difference allowed between memjax and the bare script (float32)


# ---------------------------------------------------------------------------
# Timing.


def interleaved(designs: dict[str, Callable[[], object]], repeats: int) -> dict:
  """Time zero-argument calls that return finished results, interleaved across designs.

  Each design is called once untimed (warm-up: compilation, caches), then ``repeats`` rounds
  call every design once, the order rotated by one each round so that no design always runs
  first or after the same neighbour.

  Returns:
    ``{name: {"first_call_s", "times_s", "best_s", "median_s", "output"}}``.
  """
  res = {}
  for name, fn in designs.items():
    start = time.perf_counter()
    out = fn()
    res[name] = {"first_call_s": time.perf_counter() - start, "times_s": [], "output": out}
  names = list(designs)
  for r in range(repeats):
    k = r % len(names)
    for name in names[k:] + names[:k]:
      start = time.perf_counter()
      designs[name]()
      res[name]["times_s"].append(time.perf_counter() - start)
  for entry in res.values():
    entry["best_s"] = float(np.min(entry["times_s"]))
    entry["median_s"] = float(np.median(entry["times_s"]))
  return res


def _max_rel(a, b) -> float:
  """``max |a − b| / max |b|`` over all entries (b the reference)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), np.finfo(np.float32).tiny))


def _max_rel_rows(a, b) -> float:
  """Largest per-row ``||a_s − b_s||_∞ / ||b_s||_∞``."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.max(np.abs(a - b), axis=-1) / np.max(np.abs(b), axis=-1)))


# ---------------------------------------------------------------------------
# PyTorch peer (optional).


def _import_torch():
  """``(torch, torchdiffeq, reason)``; the modules are ``None`` with a reason when missing."""
  try:
    import torch
  except ImportError:
    return None, None, "skipped: torch unavailable"
  try:
    import torchdiffeq
  except ImportError:
    return torch, None, "skipped: torchdiffeq unavailable"
  return torch, torchdiffeq, None


class _TorchMLP:
  """``MLPField`` (sinusoidal time embedding, time added to hidden layers ≥ 1) in PyTorch.

  The weights are read from a flat vector laid out as ``jax.flatten_util.ravel_pytree`` lays out
  the Flax params, so the same ``θ`` means the same network in both frameworks.
  """

  def __init__(self, torch, module: nets.MLPField, params):
    self.torch, self.module = torch, module
    self.layout = {}
    offset = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
      name = "/".join(str(k.key) for k in path[1:])  # drop the top-level 'params'
      self.layout[name] = (offset, tuple(leaf.shape))
      offset += int(np.size(leaf))

  def leaf(self, theta, name):
    offset, shape = self.layout[name]
    return theta[offset : offset + int(np.prod(shape))].reshape(shape)

  def embedding(self, t):
    """The fixed part ``[cos(ω t), sin(ω t)]`` (see :func:`memjax.nets.sinusoidal_embedding`)."""
    torch, half = self.torch, self.module.time_dim // 2
    freqs = 64.0 ** (torch.arange(half, dtype=torch.float32) / (half - 1))
    args = t[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

  def __call__(self, theta, x, emb):
    f = self.torch.nn.functional
    w = functools.partial(self.leaf, theta)
    temb = f.silu(emb @ w("time_dense/kernel") + w("time_dense/bias"))
    h = self.torch.cat([x, temb.expand(x.shape[0], -1)], dim=-1)
    for i in range(len(self.module.hidden)):
      h = h @ w(f"dense_{i}/kernel") + w(f"dense_{i}/bias")
      if i > 0:
        h = h + temb @ w(f"time_proj_{i}/kernel")
      h = f.silu(h)
    return h @ w("out/kernel") + w("out/bias")


def _torch_sync(torch, device):
  if device.type == "cuda":
    torch.cuda.synchronize()


# ---------------------------------------------------------------------------
# Geodesics.


def geodesic_problem(num_triples: int, num_velocities: int):
  """Network, flat ``θ*``, triples and velocities of the geodesic benchmark."""
  key = jax.random.PRNGKey(0)
  k_net, k_data, k_tri, k_v = jax.random.split(key, 4)
  module = nets.MLPField(dim=2, hidden=GEO["hidden"])
  params = nets.init_params(module, k_net, 2)
  train, _ = data.sample_mixture(k_data, data.ring_mixture(8), num_triples)
  x1, x0, t = curvature.make_triples(k_tri, train, num_triples)
  theta = ravel_pytree(params)[0]
  v = GEO["eta"] * jax.random.normal(k_v, (num_velocities, theta.shape[0]), theta.dtype)
  return module, params, theta, (x1, x0, t), v


def geodesic_designs(module, params, theta, triples, v, torch_mods, loop_samples):
  """``(designs, info)``: zero-argument callables returning ``θ(1)`` ``(S, P)`` as numpy."""
  x1, x0, t = triples
  tol = dict(rtol=GEO["rtol"], atol=GEO["atol"])
  apply_fn = nets.velocity_fn(module)
  designs, info = {}, {}

  # memjax: the public API, no outer jit; loss_fn built once as a user would.
  loss_fn = curvature.curvature_loss(apply_fn, params, x1, x0, t, alpha=1.0, loss_scale=1.0)

  def memjax_call():
    res = laplace.riemannian(loss_fn, theta, v, solver="dopri5", max_steps=GEO["max_steps"], **tol)
    jax.block_until_ready(res)
    info["memjax_steps"] = np.asarray(res.num_steps)
    info["memjax_failed"] = int(np.sum(~np.asarray(res.success)))
    return np.asarray(res.theta)

  designs["memjax"] = memjax_call

  # Bare JAX: the same loss and right-hand side written directly, one jit around vmap(solve).
  unravel = ravel_pytree(params)[1]
  xt = (1.0 - t[:, None]) * x0 + t[:, None] * x1
  target = x1 - x0

  def bare_loss(th):
    return jnp.sum((module.apply(unravel(th), xt, t) - target) ** 2) + 0.5 * jnp.sum(th**2)

  def bare_rhs(s, state, args):
    th, vel = state
    g, hv = jax.jvp(jax.grad(bare_loss), (th,), (vel,))
    return vel, -g * (jnp.dot(vel, hv) / (1.0 + jnp.dot(g, g)))

  @jax.jit
  @jax.vmap
  def bare_solve(vs):
    sol = diffrax.diffeqsolve(
      diffrax.ODETerm(bare_rhs),
      diffrax.Dopri5(),
      0.0,
      1.0,
      None,
      (theta, vs),
      saveat=diffrax.SaveAt(t1=True),
      stepsize_controller=diffrax.PIDController(**tol),
      max_steps=GEO["max_steps"],
      throw=False,
    )
    return sol.ys[0][-1], sol.stats["num_steps"]

  def bare_call():
    th1, steps = jax.block_until_ready(bare_solve(v))
    info["bare_steps"] = np.asarray(steps)
    return np.asarray(th1)

  designs["bare JAX"] = bare_call

  torch, torchdiffeq, reason = torch_mods
  if torchdiffeq is None:
    info["torch"] = reason
    return designs, info
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  net = _TorchMLP(torch, module, params)
  as_t = lambda a: torch.from_numpy(np.array(a, np.float32)).to(device)
  xt_t, target_t, t_t = as_t(xt), as_t(target), as_t(t)
  emb_t = net.embedding(t_t.cpu()).to(device)
  theta_t, v_t = as_t(theta), as_t(v)
  p = theta_t.shape[0]
  tspan = torch.tensor([0.0, 1.0], device=device)

  def torch_loss(th):
    return ((net(th, xt_t, emb_t) - target_t) ** 2).sum() + 0.5 * (th**2).sum()

  hvp = lambda th, vel: torch.func.jvp(torch.func.grad(torch_loss), (th,), (vel,))
  hvp_batched = torch.func.vmap(hvp)
  nfe = {"batched": 0, "loop": 0}

  def rhs_batched(s, y):  # y (S, 2P) = [θ, θ̇] per row
    nfe["batched"] += 1
    th, vel = y[:, :p], y[:, p:]
    g, hv = hvp_batched(th, vel)
    coef = (vel * hv).sum(-1, keepdim=True) / (1.0 + (g * g).sum(-1, keepdim=True))
    return torch.cat([vel, -g * coef], dim=-1)

  def rhs_one(s, y):  # y (2P,)
    nfe["loop"] += 1
    th, vel = y[:p], y[p:]
    g, hv = hvp(th, vel)
    return torch.cat([vel, -g * ((vel * hv).sum() / (1.0 + (g * g).sum()))])

  def torch_batched_call():
    nfe["batched"] = 0
    y0 = torch.cat([theta_t.expand(v_t.shape[0], -1), v_t], dim=-1)
    y1 = torchdiffeq.odeint(rhs_batched, y0, tspan, method="dopri5", **tol)[-1]
    _torch_sync(torch, device)
    info["torch_batched_nfe"] = nfe["batched"]
    return y1[:, :p].cpu().numpy()

  def torch_loop_call():
    nfe["loop"] = 0
    out = []
    for vs in v_t[:loop_samples]:
      y1 = torchdiffeq.odeint(rhs_one, torch.cat([theta_t, vs]), tspan, method="dopri5", **tol)
      out.append(y1[-1, :p])
    _torch_sync(torch, device)
    info["torch_loop_nfe"] = nfe["loop"]
    return torch.stack(out).cpu().numpy()

  designs["torch batched"] = torch_batched_call
  designs["torch loop"] = torch_loop_call
  info["torch_device"] = str(device)
  return designs, info


# ---------------------------------------------------------------------------
# FLIPD.


def flipd_problem(num_points: int):
  key = jax.random.PRNGKey(10)
  k_net, k_x, k_probe = jax.random.split(key, 3)
  module = nets.MLPField(dim=FLIPD["dim"], hidden=FLIPD["hidden"])
  params = nets.init_params(module, k_net, FLIPD["dim"])
  x = jax.random.normal(k_x, (num_points, FLIPD["dim"]))
  return module, params, x, k_probe


def flipd_designs(module, params, x, key, torch_mods):
  """``designs``: zero-argument callables returning FLIPD ``(N,)`` (or ε̂ for forward passes)."""
  sched, t0, d = paths.vp_linear(), FLIPD["t0"], FLIPD["dim"]
  n = x.shape[0]
  apply_fn = nets.velocity_fn(module)  # used as the ε-prediction network
  field = functools.partial(apply_fn, params)  # built once, as a user would
  psi, sig = sched.psi(jnp.float32(t0)), sched.sigma(jnp.float32(t0))
  opts = dict(parameterisation="eps", chunk_size=FLIPD["chunk_size"])
  designs = {}

  designs["exact: memjax"] = lambda: np.asarray(lid.flipd(field, x, t0, sched, **opts))
  designs["1-probe: memjax"] = lambda: np.asarray(
    lid.flipd(field, x, t0, sched, key=key, n_probes=1, **opts)
  )

  # The same public call inside a user's jit: separates memjax's per-call Python work (argument
  # checks, dispatch) from the compiled program.
  probe_in_jit = jax.jit(lambda x, k: lid.flipd(field, x, t0, sched, key=k, n_probes=1, **opts))
  designs["1-probe: memjax, user jit"] = lambda: np.asarray(probe_in_jit(x, key))

  def eps_point(y):
    return field(y[None, :], jnp.full((1,), t0, y.dtype))[0]

  @jax.jit
  def bare_exact(x):
    def point(y):
      e, lin = jax.linearize(eps_point, y)
      tr = jnp.trace(jax.vmap(lin)(jnp.eye(d, dtype=y.dtype)))
      return d - sig * tr + jnp.sum(e**2)

    return jax.vmap(point)(psi * x)

  @jax.jit
  def bare_probe(x, key):
    def point(y, k):
      e, lin = jax.linearize(eps_point, y)
      z = jax.random.normal(k, (1, d), y.dtype)[0]  # memjax's per-point probe (matfree layout)
      return d - sig * jnp.dot(z, lin(z)) + jnp.sum(e**2)

    return jax.vmap(point)(psi * x, jax.random.split(key, n))

  forward = jax.jit(lambda x: field(psi * x, jnp.full((n,), t0, x.dtype)))
  designs["exact: bare JAX"] = lambda: np.asarray(bare_exact(x))
  designs["1-probe: bare JAX"] = lambda: np.asarray(bare_probe(x, key))
  designs["forward: JAX"] = lambda: np.asarray(forward(x))

  torch = torch_mods[0]
  if torch is None:
    return designs
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  net = _TorchMLP(torch, module, params)
  theta_t = torch.from_numpy(np.array(ravel_pytree(params)[0])).to(device)
  x_t = torch.from_numpy(np.array(x)).to(device)
  emb_t = net.embedding(torch.full((1,), t0)).to(device)
  psi_f, sig_f = float(psi), float(sig)
  eye = torch.eye(d, device=device)
  gen = torch.Generator(device=device).manual_seed(0)
  eps_t = lambda y: net(theta_t, y, emb_t)

  def torch_exact():
    y = psi_f * x_t
    e = eps_t(y)
    tr = torch.zeros(n, device=device)
    for start in range(0, d, FLIPD["chunk_size"]):
      basis = eye[start : start + FLIPD["chunk_size"]]  # (c, D)
      jv = torch.func.vmap(lambda b: torch.func.jvp(eps_t, (y,), (b.expand(n, d),))[1])(basis)
      tr += (jv * basis[:, None, :]).sum(dim=(0, 2))
    out = d - sig_f * tr + (e**2).sum(-1)
    _torch_sync(torch, device)
    return out.cpu().numpy()

  def torch_probe():
    y = psi_f * x_t
    z = torch.randn(n, d, generator=gen, device=device)
    e, jz = torch.func.jvp(eps_t, (y,), (z,))
    out = d - sig_f * (z * jz).sum(-1) + (e**2).sum(-1)
    _torch_sync(torch, device)
    return out.cpu().numpy()

  def torch_forward():
    out = eps_t(psi_f * x_t)
    _torch_sync(torch, device)
    return out.cpu().numpy()

  designs["exact: torch"] = torch_exact
  designs["1-probe: torch"] = torch_probe
  designs["forward: torch"] = torch_forward
  return designs


# ---------------------------------------------------------------------------
# Driver.


def run(size: str, repeats: int, torch_threads: int = 2) -> dict:
  cfg = SIZES[size]
  torch_mods = _import_torch()
  torch = torch_mods[0]
  if torch is not None and not torch.cuda.is_available():
    torch.set_num_threads(torch_threads)
  env = {
    "jax": jax.__version__,
    "diffrax": diffrax.__version__,
    "jax_device": str(jax.devices()[0]),
    "torch": None if torch is None else torch.__version__,
    "torchdiffeq": None if torch_mods[1] is None else torch_mods[1].__version__,
    "torch_status": torch_mods[2] or "ok",
    "torch_threads": None if torch is None else torch.get_num_threads(),
    "cpu_count": os.cpu_count(),
  }

  module, params, theta, triples, v = geodesic_problem(cfg["num_triples"], cfg["num_velocities"])
  designs, info = geodesic_designs(
    module, params, theta, triples, v, torch_mods, cfg["loop_samples"]
  )
  geo = interleaved(designs, repeats)
  s = cfg["num_velocities"]
  counts = {name: s for name in geo}
  if "torch loop" in geo:
    counts["torch loop"] = min(s, cfg["loop_samples"])

  module_f, params_f, x, key = flipd_problem(cfg["num_points"])
  fl = interleaved(flipd_designs(module_f, params_f, x, key, torch_mods), FLIPD_ROUNDS * repeats)

  theta_m = geo["memjax"]["output"]
  checks = {
    "theta1_memjax_vs_bare": _max_rel_rows(theta_m, geo["bare JAX"]["output"]),
    "displacement_memjax_vs_bare": _max_rel_rows(
      theta_m - np.asarray(theta), geo["bare JAX"]["output"] - np.asarray(theta)
    ),
    "flipd_exact_memjax_vs_bare": _max_rel(
      fl["exact: memjax"]["output"], fl["exact: bare JAX"]["output"]
    ),
    "flipd_1probe_memjax_vs_bare": _max_rel(
      fl["1-probe: memjax"]["output"], fl["1-probe: bare JAX"]["output"]
    ),
  }
  gated = list(checks)
  d = FLIPD["dim"]
  checks["flipd_exact_minus_D_memjax_vs_bare"] = _max_rel(
    fl["exact: memjax"]["output"] - d, fl["exact: bare JAX"]["output"] - d
  )
  for name in ("torch batched", "torch loop"):
    if name in geo:
      k = counts[name]
      checks[f"theta1_{name.replace(' ', '_')}_vs_memjax"] = _max_rel_rows(
        geo[name]["output"], theta_m[:k]
      )
      checks[f"displacement_{name.replace(' ', '_')}_vs_memjax"] = _max_rel_rows(
        geo[name]["output"] - np.asarray(theta), theta_m[:k] - np.asarray(theta)
      )
  if "exact: torch" in fl:
    checks["flipd_exact_torch_vs_memjax"] = _max_rel(
      fl["exact: torch"]["output"], fl["exact: memjax"]["output"]
    )
    checks["flipd_exact_minus_D_torch_vs_memjax"] = _max_rel(
      fl["exact: torch"]["output"] - d, fl["exact: memjax"]["output"] - d
    )

  n = cfg["num_points"]
  geo_rate = {name: counts[name] / e["best_s"] for name, e in geo.items()}
  fl_rate = {name: n / e["best_s"] for name, e in fl.items()}
  ratios = {
    "geodesics_memjax_over_bare": geo_rate["memjax"] / geo_rate["bare JAX"],
    "flipd_exact_memjax_over_bare": fl_rate["exact: memjax"] / fl_rate["exact: bare JAX"],
    "flipd_1probe_memjax_over_bare": fl_rate["1-probe: memjax"] / fl_rate["1-probe: bare JAX"],
    "flipd_1probe_memjax_cost_over_forward": fl["1-probe: memjax"]["best_s"]
    / fl["forward: JAX"]["best_s"],
    "flipd_exact_memjax_cost_over_forward": fl["exact: memjax"]["best_s"]
    / fl["forward: JAX"]["best_s"],
  }
  if "torch batched" in geo:
    ratios["geodesics_memjax_over_torch_batched"] = geo_rate["memjax"] / geo_rate["torch batched"]
    ratios["geodesics_memjax_over_torch_loop"] = geo_rate["memjax"] / geo_rate["torch loop"]
  if "exact: torch" in fl:
    ratios["flipd_exact_memjax_over_torch"] = fl_rate["exact: memjax"] / fl_rate["exact: torch"]
    ratios["flipd_1probe_memjax_over_torch"] = (
      fl_rate["1-probe: memjax"] / fl_rate["1-probe: torch"]
    )
    ratios["flipd_1probe_torch_cost_over_forward"] = (
      fl["1-probe: torch"]["best_s"] / fl["forward: torch"]["best_s"]
    )

  strip = lambda res: {k: {f: e[f] for f in e if f != "output"} for k, e in res.items()}
  steps = {k: val.tolist() for k, val in info.items() if k.endswith("_steps")}
  return {
    "size": size,
    "repeats": repeats,
    "env": env,
    "geodesics": {
      "num_params": int(theta.shape[0]),
      "num_triples": cfg["num_triples"],
      "num_velocities": s,
      "samples_timed": counts,
      "settings": {k: list(val) if isinstance(val, tuple) else val for k, val in GEO.items()},
      "timings": strip(geo),
      "samples_per_s": geo_rate,
      "steps": steps,
      "memjax_failed": info["memjax_failed"],
      "torch_nfe": {k: val for k, val in info.items() if k.endswith("_nfe")},
      "torch": info.get("torch", "ok"),
    },
    "flipd": {
      "dim": FLIPD["dim"],
      "num_points": n,
      "num_params": nets.num_params(params_f),
      "settings": {k: list(val) if isinstance(val, tuple) else val for k, val in FLIPD.items()},
      "timings": strip(fl),
      "points_per_s": fl_rate,
    },
    "ratios": ratios,
    "checks": checks,
    "checks_gated": gated,
    "tolerance": TOLERANCE,
  }


def report(res: dict) -> None:
  geo, fl = res["geodesics"], res["flipd"]
  env = res["env"]
  print(
    f"compare ({res['size']}; {env['jax_device']}; jax {env['jax']}, torch {env['torch']}, "
    f"torchdiffeq {env['torchdiffeq']}, torch threads {env['torch_threads']}; "
    f"best of {res['repeats']} interleaved repeats)"
  )
  print(
    f"\ngeodesics: P = {geo['num_params']}, B = {geo['num_triples']}, "
    f"S = {geo['num_velocities']}, dopri5 rtol {GEO['rtol']:g} atol {GEO['atol']:g}"
  )
  print(f"  {'design':<16}{'samples/s':>11}{'best s':>9}{'median s':>10}{'1st call s':>12}")
  for name, t in geo["timings"].items():
    print(
      f"  {name:<16}{geo['samples_per_s'][name]:>11.3f}{t['best_s']:>9.3f}{t['median_s']:>10.3f}"
      f"{t['first_call_s']:>12.2f}"
    )
  for name, st in geo["steps"].items():
    print(f"  {name}: {st}")
  for name, val in geo["torch_nfe"].items():
    print(f"  {name} (RHS evaluations): {val}")
  if geo["torch"] != "ok":
    print(f"  torch designs {geo['torch']}")
  print(f"\nFLIPD: D = {fl['dim']}, N = {fl['num_points']}, P = {fl['num_params']}, VP t0 = 0.05")
  print(f"  ({FLIPD_ROUNDS * res['repeats']} interleaved rounds)")
  print(f"  {'design':<27}{'points/s':>11}{'best s':>9}{'median s':>10}{'1st call s':>12}")
  for name, t in fl["timings"].items():
    print(
      f"  {name:<27}{fl['points_per_s'][name]:>11.1f}{t['best_s']:>9.4f}{t['median_s']:>10.4f}"
      f"{t['first_call_s']:>12.2f}"
    )
  print("\nratios (throughput A ÷ throughput B; 'cost over forward' is a time ratio):")
  for name, val in res["ratios"].items():
    print(f"  {name:<42}{val:8.3f}")
  print(f"\nchecks (max relative difference; gated at {res['tolerance']:g}):")
  for name, val in res["checks"].items():
    gate = "gated" if name in res["checks_gated"] else "info"
    print(f"  {name:<42}{val:10.2e}  ({gate})")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="small")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per design")
  parser.add_argument("--torch-threads", type=int, default=2, help="torch intra-op threads (CPU)")
  parser.add_argument("--out", default="runs/benchmarks/compare.json", help="JSON path")
  args = parser.parse_args()
  start = time.perf_counter()
  res = run(args.size, args.repeats, args.torch_threads)
  res["wall_s"] = time.perf_counter() - start
  report(res)
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=2)
  print(f"\nwall time {res['wall_s']:.1f} s; wrote {args.out}")
  bad = {k: res["checks"][k] for k in res["checks_gated"] if not res["checks"][k] <= TOLERANCE}
  if bad:
    print(f"FAIL: memjax and the bare script disagree beyond {TOLERANCE:g}: {bad}")
    sys.exit(1)


if __name__ == "__main__":
  main()
