"""Sharpness (seed 003): Gaussian lemma, Lanczos / Hutchinson vs dense Jacobians, ||H^Δ s^Δ||²,
SAIL, CFG.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import data, nets, paths, sharpness, training

D = 4


def _gaussian(key):
  a = jax.random.normal(key, (D, D), jnp.float64)
  return jnp.linspace(-1.0, 1.0, D), a @ a.T / D + 0.1 * jnp.eye(D)


def _analytic_score(mu, sigma_mat, sched):
  """s(y, t) = −C⁻¹(y − ψμ), C = ψ²Σ + σ²I (written independently of memjax.sharpness)."""

  def s(y, t):
    c = sched.psi(t) ** 2 * sigma_mat + sched.sigma(t) ** 2 * jnp.eye(D)
    return -jnp.linalg.solve(c, y - sched.psi(t) * mu)

  return s


@pytest.mark.parametrize(
  "sched_name,t", [("linear_fm", 0.3), ("linear_fm", 0.9), ("vp_linear", 0.05), ("ve", 0.2)]
)
def test_gaussian_lemma_expected_score_norm_equals_minus_trace(sched_name, t):
  sched = paths.get_schedule(sched_name)
  mu, sig = _gaussian(jax.random.PRNGKey(0))
  s = _analytic_score(mu, sig, sched)
  t = jnp.asarray(t, jnp.float64)
  c = sched.psi(t) ** 2 * sig + sched.sigma(t) ** 2 * jnp.eye(D)
  # Through the velocity adapter: s → u → point_fn(u) must give back s.
  field = lambda y, tt: paths.convert(sched, y, tt, jax.vmap(s)(y, tt), "score", "velocity")
  s_pt = paths.point_fn(field, sched, "velocity", "score")
  y = (sched.psi(t) * mu)[None] + jax.random.multivariate_normal(
    jax.random.PRNGKey(1), jnp.zeros(D), c, (20000,)
  )
  sq = jax.vmap(lambda x: sharpness.score_norm_sq(s_pt, x, t))(y)
  tr, sem = sharpness.hessian_trace(s_pt, y[0], t)
  np.testing.assert_allclose(tr, -jnp.trace(jnp.linalg.inv(c)), rtol=1e-8)
  assert float(sem) == 0.0
  mc_sem = float(jnp.std(sq) / jnp.sqrt(sq.shape[0]))
  assert abs(float(jnp.mean(sq)) + float(tr)) < 4 * mc_sem, (float(jnp.mean(sq)), float(tr), mc_sem)
  spec = sharpness.hessian_eigs(s_pt, y[0], t, 2, jax.random.PRNGKey(2), num_iters=D)
  ev = np.linalg.eigvalsh(-np.linalg.inv(np.asarray(c)))
  np.testing.assert_allclose(spec.top, ev[::-1][:2], rtol=1e-7)
  np.testing.assert_allclose(spec.bottom, ev[:2], rtol=1e-7)


@functools.lru_cache(None)
def _mlp():
  module = nets.MLPField(dim=5, hidden=(16, 16), time_dim=8)
  params = nets.init_params(module, jax.random.PRNGKey(3), 5, jnp.float64)
  field = functools.partial(nets.velocity_fn(module), params)
  return paths.point_fn(field, paths.linear_fm(), "velocity", "score")


def test_lanczos_matches_dense_symmetrised_jacobian():
  s = _mlp()
  x, t = jax.random.normal(jax.random.PRNGKey(4), (5,), jnp.float64), jnp.asarray(0.6, jnp.float64)
  jac = jax.jacfwd(lambda y: s(y, t))(x)
  assert float(jnp.max(jnp.abs(jac - jac.T))) > 1e-4  # a learned H is not symmetric
  ev = np.linalg.eigvalsh(0.5 * np.asarray(jac + jac.T))
  spec = jax.jit(lambda x, k: sharpness.hessian_eigs(s, x, t, 2, k, num_iters=5))(
    x, jax.random.PRNGKey(5)
  )
  np.testing.assert_allclose(spec.top, ev[::-1][:2], rtol=1e-7, atol=1e-9)
  np.testing.assert_allclose(spec.bottom, ev[:2], rtol=1e-7, atol=1e-9)
  _, mv = sharpness.symmetrised_hessian(s, x, t)
  v = jnp.arange(5.0, dtype=jnp.float64)
  np.testing.assert_allclose(mv(v), 0.5 * (jac + jac.T) @ v, rtol=1e-10)
  # Vmapped profile over (T, N) agrees with the per-point call.
  xs = jnp.stack([x, -x])
  prof = sharpness.sharpness_profile(
    s, xs, jnp.asarray([0.6, 0.2]), jax.random.PRNGKey(6), k=2, num_iters=5
  )
  assert prof.top.shape == (2, 2, 2) and prof.trace.shape == (2, 2)
  np.testing.assert_allclose(prof.bottom[0, 0], ev[:2], rtol=1e-7, atol=1e-9)
  np.testing.assert_allclose(prof.trace[0, 0], jnp.trace(jac), rtol=1e-10)
  np.testing.assert_allclose(prof.score_sq[0, 0], jnp.sum(s(x, t) ** 2), rtol=1e-12)


def test_hutchinson_within_four_standard_errors():
  s = _mlp()
  x, t = jax.random.normal(jax.random.PRNGKey(7), (5,), jnp.float64), jnp.asarray(0.4, jnp.float64)
  exact = jnp.trace(jax.jacfwd(lambda y: s(y, t))(x))
  est, sem = sharpness.hessian_trace(s, x, t, jax.random.PRNGKey(8), num_probes=64)
  assert float(sem) > 0
  assert abs(float(est - exact)) < 4 * float(sem)


@functools.lru_cache(None)
def _cond():
  module = nets.CondMLPField(dim=D, num_classes=2, hidden=(16, 16), time_dim=8)
  params = nets.init_cond_params(module, jax.random.PRNGKey(9), D, jnp.float64)
  return module, params, nets.cond_velocity_fn(module)


def test_hs_detector_matches_dense_jacobian_and_wen_metric():
  module, params, u = _cond()
  cs = paths.point_cond_fn(functools.partial(u, params), paths.linear_fm(), "velocity", "score")
  x, t, null = (
    jax.random.normal(jax.random.PRNGKey(10), (D,), jnp.float64),
    jnp.asarray(0.3, jnp.float64),
    2,
  )
  sd = lambda y: cs(y, t, 1) - cs(y, t, null)
  dense = jnp.sum((jax.jacfwd(sd)(x) @ sd(x)) ** 2)
  np.testing.assert_allclose(sharpness.hs_detector(cs, x, t, 1, null), dense, rtol=1e-10)
  np.testing.assert_allclose(sharpness.score_delta(cs, x, t, 1, null), sd(x), rtol=1e-12)
  uf = lambda y, tt, c: u(params, y, tt, c)
  np.testing.assert_allclose(
    sharpness.wen_metric(uf, x, t, 1, null),
    np.linalg.norm(np.asarray(u(params, x, t, 1) - u(params, x, t, null))),
    rtol=1e-12,
  )
  xs = jnp.stack([x, 2 * x])
  avg = sharpness.averaged_over_generations(lambda y: sharpness.hs_detector(cs, y, t, 1, null), xs)
  np.testing.assert_allclose(
    avg,
    0.5 * (sharpness.hs_detector(cs, x, t, 1, null) + sharpness.hs_detector(cs, 2 * x, t, 1, null)),
    rtol=1e-12,
  )


def test_sail_objective_definition_and_decrease():
  a = jnp.asarray([[2.0, 0.5, 0, 0], [0.5, 1.0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 0.1]], jnp.float64)
  g = lambda x: a @ x
  x = jnp.asarray([1.0, -2.0, 0.5, 3.0], jnp.float64)
  alpha, delta = 0.03, 0.1
  # g linear: g(x + δg(x)) − g(x) = δ A A x exactly.
  want = jnp.sum((delta * a @ a @ x) ** 2) + alpha * jnp.sum(x**2)
  np.testing.assert_allclose(sharpness.sail_objective(g, x, alpha, delta), want, rtol=1e-12)
  x0 = jnp.stack([x, -2 * x])
  fd = dict(objective="finite_difference", steps_per_round=40)  # one round, no re-seeding
  res = sharpness.sail(g, x0, alpha=alpha, delta=delta, threshold=0.0, max_iters=40, **fd)
  assert res.losses.shape == (2, 41)
  assert np.all(np.asarray(res.losses[:, -1]) < 0.5 * np.asarray(res.losses[:, 0]))
  assert np.all(np.asarray(res.iterations) == 40) and not np.any(res.converged)
  # Threshold above the start: no step taken, x unchanged.
  res0 = sharpness.sail(g, x0, alpha=alpha, delta=delta, threshold=1e6, max_iters=5, **fd)
  np.testing.assert_array_equal(res0.x, x0)
  assert np.all(np.asarray(res0.iterations) == 0) and np.all(res0.converged)
  # Stops at the first iterate at or below a mid threshold, and stays there.
  thr = float(0.5 * (res.losses[0, 0] + res.losses[0, -1]))
  res1 = sharpness.sail(g, x0[:1], alpha=alpha, delta=delta, threshold=thr, max_iters=40, **fd)
  n = int(res1.iterations[0])
  assert 0 < n < 40 and float(res1.losses[0, n]) <= thr < float(res1.losses[0, n - 1])
  np.testing.assert_allclose(res1.losses[0, n:], res1.losses[0, n], rtol=1e-12)


def test_cfg_velocity_algebra_and_cond_objective():
  module, params, u = _cond()
  x = jax.random.normal(jax.random.PRNGKey(11), (3, D), jnp.float64)
  t, y = jnp.full((3,), 0.4, jnp.float64), jnp.asarray([0, 1, 1])
  uc, un = u(params, x, t, y), u(params, x, t, jnp.full((3,), 2))
  np.testing.assert_allclose(training.cfg_velocity(u, 1.0, 2)(params, x, t, y), uc, rtol=1e-12)
  np.testing.assert_allclose(training.cfg_velocity(u, 0.0, 2)(params, x, t, y), un, rtol=1e-12)
  np.testing.assert_allclose(
    training.cfg_velocity(u, 5.0, 2)(params, x, t, y), 5 * uc - 4 * un, rtol=1e-10
  )
  xs, ys = jax.random.normal(jax.random.PRNGKey(12), (10, D), jnp.float64), jnp.arange(10) % 2
  loss = training.cond_fm_objective(u, xs, ys, 2, batch_size=8, p_uncond=0.2)(
    params, jax.random.PRNGKey(0)
  )
  assert np.isfinite(float(loss))
  # p_uncond = 1 trains only the null label: the loss ignores the labels.
  l1 = training.cond_fm_objective(u, xs, ys, 2, batch_size=8, p_uncond=1.0)(
    params, jax.random.PRNGKey(0)
  )
  l2 = training.cond_fm_objective(u, xs, 1 - ys, 2, batch_size=8, p_uncond=1.0)(
    params, jax.random.PRNGKey(0)
  )
  np.testing.assert_allclose(l1, l2, rtol=1e-12)


def test_data_helpers():
  gmm = data.sharp_broad_mixture(dtype=jnp.float64)
  np.testing.assert_allclose(gmm.weights, [0.05, 0.95])
  x, comp, uniq = data.duplicated_sample(jax.random.PRNGKey(0), gmm, 200)
  n_dup = int(np.sum(np.asarray(comp) == 0))
  assert n_dup > 1 and uniq.shape[0] == 200 - n_dup + 1
  dd = data.duplicated_digits(
    jax.random.PRNGKey(0), n_general=50, n_dup_class_distinct=5, copies=30
  )
  assert dd.x.shape == (50 + 5 + 30, 64) and dd.unique.shape == (56, 64)
  assert np.sum(dd.y == 1) == 35 and np.sum(np.all(dd.x == dd.dup_image, axis=1)) >= 30


def test_validation_errors():
  s = _mlp()
  with pytest.raises(ValueError, match="`x`"):
    sharpness.hessian_eigs(s, jnp.zeros((2, 5)), 0.5, 1, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="`key`"):
    sharpness.hessian_trace(s, jnp.zeros(5), 0.5, num_probes=3)
  with pytest.raises(ValueError, match="`src`"):
    paths.point_fn(lambda x, t: x, paths.linear_fm(), "noise", "score")
  with pytest.raises(ValueError, match="`alpha`"):
    sharpness.sail(lambda x: x, jnp.zeros((1, 2)), alpha=-1.0)
  with pytest.raises(ValueError, match="`x0`"):
    sharpness.sail(lambda x: x, jnp.zeros(2))
  with pytest.raises(ValueError, match="`max_iters`"):
    sharpness.sail(lambda x: x, jnp.zeros((1, 2)), max_iters=0)
  with pytest.raises(ValueError, match="`ts`"):
    sharpness.sharpness_profile(s, jnp.zeros((3, 5)), jnp.asarray(0.5), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="`labels`"):
    training.cond_fm_objective(lambda *a: a[1], jnp.zeros((4, 2)), jnp.zeros((3,)), 2)
  with pytest.raises(ValueError, match="`p_uncond`"):
    training.cond_fm_objective(lambda *a: a[1], jnp.zeros((4, 2)), jnp.zeros((4,)), 2, p_uncond=1.5)
  with pytest.raises(ValueError, match="`sharp_weight`"):
    data.sharp_broad_mixture(sharp_weight=1.0)


def test_lemma_check_closed_form_and_mixture():
  """Exact Gaussian score: the gap is within Monte-Carlo error; a non-Gaussian (mixture) score
  too.
  """
  import jax
  import jax.numpy as jnp

  from memjax import data as mdata
  from memjax import sharpness as sh

  cov = jnp.array([[1.0, 0.3], [0.3, 0.5]])
  prec = jnp.linalg.inv(cov)
  score = lambda y, t: -prec @ y
  ys = jax.random.multivariate_normal(jax.random.PRNGKey(0), jnp.zeros(2), cov, (20000,))
  chk = sh.lemma_check(score, ys, 0.5)
  assert abs(float(chk.mean_neg_trace) - float(jnp.trace(prec))) < 1e-12
  assert abs(float(chk.gap)) < 4 * float(chk.gap_sem)
  gmm = mdata.gaussian_mixture([[-1.0, 0.0], [1.5, 0.5]], [0.4, 0.7], [0.3, 0.7], dtype=jnp.float64)
  mscore = lambda y, t: jax.grad(lambda z: mdata.mixture_log_prob(gmm, z[None])[0])(y)
  ys, _ = mdata.sample_mixture(jax.random.PRNGKey(1), gmm, 20000)
  chk = sh.lemma_check(mscore, ys, 0.5)
  assert abs(float(chk.gap)) < 4 * float(chk.gap_sem) and float(chk.mean_score_sq) > 1.0
  # A non-gradient / wrongly scaled field fails the identity.
  bad = sh.lemma_check(
    lambda y, t: -2.0 * prec @ y,
    jax.random.multivariate_normal(jax.random.PRNGKey(0), jnp.zeros(2), cov, (20000,)),
    0.5,
  )
  assert abs(float(bad.gap)) > 10 * float(bad.gap_sem)


# ---------------------------------------------------------------------------
# Issue 27: SAIL's direction, typicality and its rejection control.


def test_sail_default_direction_has_no_false_minima_in_1d():
  """s^Δ(y) = −y, σ = 0.93: g = ε-difference gives L = σ(|y| + 1) (minimum only at 0); g = s^Δ
  gives L = ||y| − 1| (false minima on |y| = 1). The experiments' default is the former."""
  from experiments.sharpness.configs import sail_section

  assert sail_section().direction == "eps"
  sigma = 0.93
  s_delta = lambda y: -y
  ys = jnp.linspace(-3.0, 3.0, 601, dtype=jnp.float64)
  ys = ys[jnp.abs(ys) > 1e-9]
  loss = lambda g: jax.vmap(lambda y: sharpness.sail_objective_official(g, y[None], 0.0))(ys)
  l_eps = loss(sharpness.sail_field(s_delta, sigma))  # default direction
  l_s = loss(sharpness.sail_field(s_delta, sigma, "score"))
  a = np.abs(np.asarray(ys))
  np.testing.assert_allclose(l_eps, sigma * (a + 1), rtol=1e-12)
  np.testing.assert_allclose(l_s, np.abs(a - 1), atol=1e-12)
  # Default: strictly increasing in |y| on each side, so no minimum away from 0.
  neg, pos = np.asarray(l_eps)[np.asarray(ys) < 0], np.asarray(l_eps)[np.asarray(ys) > 0]
  assert np.all(np.diff(neg) < 0) and np.all(np.diff(pos) > 0)
  # s^Δ form: zeros at |y| = 1, i.e. local minima away from 0.
  assert float(jnp.min(l_s)) < 1e-12 and np.allclose(a[np.asarray(l_s) < 1e-12], 1.0)
  # Adam from y = 0.8 (one round, α = 0): the default goes to 0, the s^Δ form to the ring |y| = 1.
  x0 = jnp.asarray([[0.8], [-0.7]], jnp.float64)
  kw = dict(alpha=0.0, threshold=-1.0, lr=0.01, max_iters=200, steps_per_round=200)
  r_eps = sharpness.sail(sharpness.sail_field(s_delta, sigma), x0, **kw)
  r_s = sharpness.sail(sharpness.sail_field(s_delta, sigma, "score"), x0, **kw)
  assert np.all(np.abs(np.asarray(r_eps.x)) < 0.05)
  assert np.all(np.abs(np.abs(np.asarray(r_s.x)) - 1) < 0.05)
  with pytest.raises(ValueError, match="`direction`"):
    sharpness.sail_field(s_delta, sigma, "velocity")


def test_projection_onto_the_typical_shell_is_exact_and_keeps_sail_typical():
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 7), jnp.float64) * jnp.arange(1.0, 6.0)[:, None]
  p = sharpness.project_to_shell(x)
  np.testing.assert_allclose(jnp.linalg.norm(p, axis=1), np.sqrt(7.0), rtol=1e-14)
  np.testing.assert_allclose(
    p / jnp.linalg.norm(p, axis=1, keepdims=True),
    x / jnp.linalg.norm(x, axis=1, keepdims=True),
    rtol=1e-13,
  )
  np.testing.assert_array_equal(sharpness.project_to_shell(jnp.zeros((1, 3))), jnp.zeros((1, 3)))
  # g ≡ 0: L = α||x||, so plain SAIL only shrinks the latent; projected SAIL keeps ||x|| = √D.
  g = lambda y: jnp.zeros_like(y)
  x0 = jax.random.normal(jax.random.PRNGKey(1), (4, 16), jnp.float64)
  kw = dict(alpha=0.05, threshold=-1.0, max_iters=30, steps_per_round=30)
  free = sharpness.sail(g, x0, **kw)
  proj = sharpness.sail(g, x0, project=True, **kw)
  assert np.all(np.sum(np.asarray(free.x) ** 2, 1) / 16 < 0.5 * np.sum(np.asarray(x0) ** 2, 1) / 16)
  np.testing.assert_allclose(jnp.sum(proj.x**2, 1) / 16, 1.0, rtol=1e-13)


def test_rejection_control_matches_brute_force_and_sail_loss_terms():
  a = jnp.diag(jnp.asarray([2.0, 1.0, 0.5], jnp.float64))
  g = lambda y: a @ y
  x0 = jax.random.normal(jax.random.PRNGKey(2), (6, 3), jnp.float64)
  key, alpha = jax.random.PRNGKey(5), 0.05
  s, p = sharpness.sail_loss_terms(g, x0)
  hand = lambda x: float(
    np.linalg.norm(np.asarray(a) @ (x + np.asarray(a) @ x / np.linalg.norm(np.asarray(a) @ x)))
  )
  np.testing.assert_allclose(s, [hand(np.asarray(x)) for x in x0], rtol=1e-12)
  np.testing.assert_allclose(p, np.linalg.norm(np.asarray(x0), axis=1), rtol=1e-12)
  l0 = np.asarray(s + alpha * p)
  thr0, step = 0.6 * float(np.median(l0)), 0.2
  kw = dict(alpha=alpha, threshold=thr0, threshold_step=step, rounds_per_rise=1)
  res = sharpness.rejection_control(
    g, x0, steps_per_round=2, max_iters=4, step_cost=3, key=key, **kw
  )
  keys = jax.random.split(key, 6)
  for n in range(6):  # draw 0 = x0[n]; draw j = N(0, I) from fold_in(keys[n], j); 6 per round
    want = None
    for j in range(12):
      x = x0[n] if j == 0 else jax.random.normal(jax.random.fold_in(keys[n], j), (3,), jnp.float64)
      lj = hand(np.asarray(x)) + alpha * float(np.linalg.norm(np.asarray(x)))
      if lj <= thr0 + step * (j // 6):
        want = (x, j + 1, thr0 + step * (j // 6))
        break
    if want is None:
      assert not bool(res.converged[n]) and int(res.draws[n]) == 12
    else:
      assert bool(res.converged[n]) and int(res.draws[n]) == want[1]
      np.testing.assert_allclose(res.x[n], want[0], rtol=1e-14)
      np.testing.assert_allclose(res.threshold[n], want[2], rtol=1e-14)
  assert np.any(np.asarray(res.draws) > 1) and np.any(np.asarray(res.converged))
  # sail's absolute threshold_step gives thr_0 + step ⌊r / rounds_per_rise⌋.
  sres = sharpness.sail(g, x0, steps_per_round=2, max_iters=4, lr=1e-4, **kw)
  np.testing.assert_allclose(sres.threshold, thr0 + step * (np.asarray(sres.rounds) - 1), 1e-14)
  with pytest.raises(ValueError, match="`step_cost`"):
    sharpness.rejection_control(g, x0, step_cost=0)
  with pytest.raises(ValueError, match="`threshold`"):
    sharpness.rejection_control(g, x0, threshold=float("nan"))


def test_match_noise_level_vp_t0_in_linear_fm_as_documented():
  """paths.match_noise_level's docstring numbers: VP t0 = 0.05 → σ/ψ = 0.17414, FM t = 0.85169."""
  from experiments import common

  with common.x64(True):
    vp, fm = paths.get_schedule("vp_linear"), paths.linear_fm()
    r = float(paths.noise_to_signal(vp, jnp.float64(0.05)))
    t = float(paths.match_noise_level(jnp.float64(0.05), vp, fm))
  assert abs(r - 0.17414) < 5e-6 and abs(t - 0.85169) < 5e-6
  np.testing.assert_allclose(t, 1 / (1 + r), rtol=1e-12)
