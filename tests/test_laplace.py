"""Tests for memjax.laplace: tangent Gaussian sampling and Riemannian (geodesic) samples
(float64).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import curvature, laplace, linalg, nets

# --- A small nonlinear test loss with a critical point at 0:
# L(θ) = ½ θᵀAθ + (1/6) Σ b_i θ_i³ + ¼ Σ θ_i⁴   (g(0) = 0, H(0) = A, third derivative ≠ 0).
A3 = jnp.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]])
B3 = jnp.array([0.7, -0.4, 0.9])


def toy_loss(th):
  return 0.5 * th @ A3 @ th + jnp.sum(B3 * th**3) / 6 + 0.25 * jnp.sum(th**4)


@jax.jit
def solve_toy(theta0, v, ts, rtol, atol):
  return laplace.riemannian(toy_loss, theta0, v, rtol=rtol, atol=atol, saveat_ts=ts)


@jax.jit
def solve_toy_few_steps(theta0, v, rtol, atol):
  return laplace.riemannian(toy_loss, theta0, v, rtol=rtol, atol=atol, max_steps=16)


TS = jnp.array([0.0125, 0.025, 0.05, 0.1, 0.2, 0.4, 1.0])
V3 = jnp.array([[0.8, -0.5, 1.0], [-1.2, 0.3, 0.4], [0.2, 1.5, -0.7]])


def speed_ref(th, v):
  g = jax.grad(toy_loss)(th)
  return jnp.sum(v**2) + jnp.dot(g, v) ** 2


def test_speed_conserved_along_solution():
  theta0 = jnp.array([0.3, -0.2, 0.5])  # not a critical point: g(θ*) ≠ 0
  res = solve_toy(theta0, 1.5 * V3, TS, 1e-9, 1e-11)
  assert np.all(np.asarray(res.success))
  s0 = jax.vmap(lambda v: jnp.sum(v**2) + jnp.dot(jax.grad(toy_loss)(theta0), v) ** 2)(1.5 * V3)
  s_path = jax.vmap(jax.vmap(speed_ref))(res.trajectory, res.trajectory_velocity)  # (S, T)
  rel = np.abs(np.asarray(s_path) / np.asarray(s0)[:, None] - 1.0)
  assert rel.max() < 1e-6, rel
  assert np.all(np.asarray(res.speed_drift) < 1e-6)
  # The geodesic genuinely bends: θ(1) is far from the straight line θ* + v.
  assert (
    np.min(np.linalg.norm(np.asarray(res.theta - laplace.euclidean(theta0, 1.5 * V3)), axis=1))
    > 1e-2
  )


def test_critical_point_fourth_order_expansion():
  # γ(t) = tv − (t³/6)(vᵀHv) Hv + O(t⁴) at g(θ*)=0, hence
  # L(γ(t)) − L(tv) = ∇L(tv)ᵀ(γ(t) − tv) + O(t⁵) = −(t⁴/6)(vᵀHv)||Hv||² + O(t⁵).
  res = solve_toy(jnp.zeros(3), V3, TS, 1e-12, 1e-14)
  assert np.all(np.asarray(res.success))
  ts = np.asarray(TS[:5])
  for s in range(V3.shape[0]):
    v = V3[s]
    hv = A3 @ v
    pred = -(ts**4 / 6) * float(v @ hv) * float(hv @ hv)
    diff = np.array([toy_loss(res.trajectory[s, i]) - toy_loss(ts[i] * v) for i in range(len(ts))])
    err = np.abs(diff / pred - 1.0)
    assert np.all(np.diff(err) > 0), err  # error shrinks with t
    assert err[0] < 0.05, err
    # The remainder is O(t⁵) (cubic term present): for small t the relative error halves with t.
    np.testing.assert_allclose(err[1] / err[0], 2.0, rtol=0.1)


def test_affine_loss_gives_straight_line():
  a = jnp.array([1.0, -2.0, 0.5, 3.0])
  loss = lambda th: a @ th + 0.7
  theta0 = jnp.array([0.1, 0.2, -0.3, 0.4])
  v = jax.random.normal(jax.random.PRNGKey(0), (3, 4), jnp.float64)
  res = laplace.riemannian(loss, theta0, v)
  assert np.all(np.asarray(res.success))
  np.testing.assert_allclose(res.theta, theta0[None, :] + v, atol=1e-10)
  np.testing.assert_allclose(res.theta, laplace.euclidean(theta0, v), atol=1e-10)


def _solve_1d(p, v, solver):
  return laplace.riemannian(
    lambda th: 0.5 * p * th @ th, jnp.zeros(1), v, solver=solver, rtol=1e-10, atol=1e-12
  )


SOLVE_1D = {s: jax.jit(lambda p, v, s=s: _solve_1d(p, v, s)) for s in ("tsit5", "dopri5")}


@pytest.mark.parametrize("solver", ["tsit5", "dopri5"])
def test_1d_quadratic_arc_length_closed_form(solver):
  # Geodesic of the curve y = ½pθ² from 0 with speed |v|: its arc length to θ₁ equals v.
  v = jnp.array([[0.3], [1.0], [-2.0], [4.0]])
  for p in (0.5, 2.0, 5.0):
    res = SOLVE_1D[solver](jnp.asarray(p), v)
    assert np.all(np.asarray(res.success))
    th1 = np.asarray(res.theta[:, 0])
    arc = 0.5 * (th1 * np.sqrt(1 + p**2 * th1**2) + np.arcsinh(p * th1) / p)
    np.testing.assert_allclose(arc, np.asarray(v[:, 0]), atol=1e-8, rtol=0)


# --- RHS against a dense Hessian on the small MLP curvature loss.
def test_geodesic_rhs_matches_dense_hessian():
  mod = nets.MLPField(dim=2, hidden=(8, 8), time_dim=8)
  k_p, k_d, k_t, k_v = jax.random.split(jax.random.PRNGKey(1), 4)
  params = jax.tree_util.tree_map(
    lambda x: x.astype(jnp.float64), nets.init_params(mod, k_p, 2, jnp.float64)
  )
  x1, x0, t = curvature.make_triples(k_t, jax.random.normal(k_d, (16, 2), jnp.float64), 6)
  loss = curvature.curvature_loss(nets.velocity_fn(mod), params, x1, x0, t, alpha=0.1, num_data=16)
  theta = curvature.param_subset(params).theta
  vel = jax.random.normal(k_v, theta.shape, jnp.float64)
  d_theta, acc = jax.jit(
    lambda th, ve: laplace.geodesic_rhs(laplace.as_loss(loss))(0.0, (th, ve), None)
  )(theta, vel)
  g = jax.grad(loss)(theta)
  hess = jax.jit(jax.hessian(loss))(theta)
  ref = -g * (vel @ hess @ vel) / (1.0 + g @ g)
  np.testing.assert_array_equal(d_theta, vel)
  np.testing.assert_allclose(acc, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


# --- Tangent Gaussian sampling.
P6, K3 = 6, 3
_Q6, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(P6, P6)))
EIG = linalg.Eigenpairs(jnp.array([5.0, 2.0, -0.3]), jnp.asarray(_Q6[:, :K3].T), jnp.zeros(K3))
ALPHA, ETA, NS = 0.5, 0.7, 20000


def _sigma_ref(subspace=False):
  u = np.asarray(EIG.vectors)
  lam = np.maximum(np.asarray(EIG.values), 0.0)  # clipped, as in DESIGN
  low = u.T @ np.diag(1.0 / (lam + ALPHA)) @ u
  return low if subspace else low + (np.eye(P6) - u.T @ u) / ALPHA


def _check_cov(v, cov):
  v = np.asarray(v)
  emp = v.T @ v / v.shape[0]  # known zero mean
  se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / v.shape[0])
  assert np.all(np.abs(emp - cov) < 5 * se + 1e-12), np.abs(emp - cov) / (se + 1e-300)


def test_tangent_covariance_is_inverse_of_low_rank_precision():
  tg = laplace.tangent_gaussian(EIG, ALPHA)
  u, lam = np.asarray(EIG.vectors), np.maximum(np.asarray(EIG.values), 0.0)
  precision = u.T @ np.diag(lam) @ u + ALPHA * np.eye(P6)
  np.testing.assert_allclose(
    laplace.tangent_covariance_dense(tg), np.linalg.inv(precision), atol=1e-12
  )
  w = jax.random.normal(jax.random.PRNGKey(3), (4, P6), jnp.float64)
  sq = laplace.tangent_sqrt(tg, laplace.tangent_sqrt(tg, w))
  np.testing.assert_allclose(sq, laplace.tangent_covariance(tg)(w), atol=1e-12)


@pytest.mark.parametrize("mode", ["full", "subspace"])
def test_sample_covariance(mode):
  v = laplace.sample_velocities(EIG, ALPHA, ETA, jax.random.PRNGKey(4), NS, mode=mode)
  assert v.shape == (NS, P6)
  _check_cov(v, ETA**2 * _sigma_ref(subspace=(mode == "subspace")))


def test_full_minus_subspace_is_orthogonal_complement():
  key = jax.random.PRNGKey(5)
  full = laplace.sample_velocities(EIG, ALPHA, ETA, key, 50, mode="full")
  sub = laplace.sample_velocities(EIG, ALPHA, ETA, key, 50, mode="subspace")
  np.testing.assert_allclose((full - sub) @ EIG.vectors.T, 0.0, atol=1e-12)


def test_single_mode_lies_on_eigenvector():
  i = 1
  v = laplace.sample_velocities(EIG, ALPHA, ETA, jax.random.PRNGKey(6), NS, mode="single", index=i)
  u = np.asarray(EIG.vectors[i])
  coef = np.asarray(v) @ u
  np.testing.assert_allclose(np.asarray(v), coef[:, None] * u[None, :], atol=1e-12)
  var = ETA**2 / (float(EIG.values[i]) + ALPHA)
  assert abs(np.mean(coef**2) / var - 1.0) < 5 * np.sqrt(2.0 / NS)


# --- Failures are reported per sample, never replaced.
def test_vmapped_failure_is_reported():
  v = jnp.array([[0.01, 0.02, 0.0], [0.0, 0.01, 0.01], [30.0, -20.0, 10.0]])
  res = solve_toy_few_steps(jnp.zeros(3), v, 1e-6, 1e-8)
  np.testing.assert_array_equal(res.success, [True, True, False])
  assert int(res.result[2]) != 0 and int(res.result[0]) == int(res.result[1]) == 0
  assert int(res.num_steps[2]) == 16 and float(res.t_final[2]) < 1.0
  np.testing.assert_allclose(res.t_final[:2], 1.0)
  assert np.all(np.isfinite(np.asarray(res.theta)))  # the stopping state, not a substitute
  summary = laplace.summarise_failures(res)
  assert summary["total"] == 3 and summary["successful"] == 2 and summary["failed"] == 1
  assert summary["by_result"] == {"successful": 2, "max_steps_reached": 1}
  # Each sample has its own adaptive steps: the good samples match a solve with a large budget.
  ref = solve_toy(jnp.zeros(3), v, TS, 1e-6, 1e-8)
  assert np.all(np.asarray(ref.success))
  np.testing.assert_allclose(res.theta[:2], ref.theta[:2], rtol=1e-12, atol=1e-14)
  np.testing.assert_array_equal(res.num_steps[:2], ref.num_steps[:2])


def test_input_validation():
  th, v = jnp.zeros(3), V3
  with pytest.raises(ValueError, match="`v`"):
    laplace.riemannian(toy_loss, th, v[0])
  with pytest.raises(ValueError, match="`v`"):
    laplace.riemannian(toy_loss, th, v[:, :2])
  with pytest.raises(ValueError, match="`theta_map`"):
    laplace.riemannian(toy_loss, th.at[1].set(jnp.nan), v)
  with pytest.raises(ValueError, match="`v`"):
    laplace.riemannian(toy_loss, th, v.at[0, 0].set(jnp.inf))
  with pytest.raises(ValueError, match="`solver`"):
    laplace.riemannian(toy_loss, th, v, solver="euler")
  with pytest.raises(ValueError, match="`rtol`"):
    laplace.riemannian(toy_loss, th, v, rtol=0.0)
  with pytest.raises(ValueError, match="`saveat_ts`"):
    laplace.riemannian(toy_loss, th, v, saveat_ts=jnp.array([0.5, 0.2]))
  with pytest.raises(ValueError, match="`alpha`"):
    laplace.sample_velocities(EIG, 0.0, ETA, jax.random.PRNGKey(0), 3)
  with pytest.raises(ValueError, match="`mode`"):
    laplace.sample_velocities(EIG, ALPHA, ETA, jax.random.PRNGKey(0), 3, mode="diag")
  with pytest.raises(ValueError, match="`index`"):
    laplace.sample_velocities(EIG, ALPHA, ETA, jax.random.PRNGKey(0), 3, mode="single")
  with pytest.raises(ValueError, match="`index`"):
    laplace.sample_velocities(EIG, ALPHA, ETA, jax.random.PRNGKey(0), 3, mode="single", index=3)
  with pytest.raises(ValueError, match="`eig.vectors`"):
    laplace.sample_velocities(
      EIG._replace(vectors=EIG.vectors[:2]), ALPHA, ETA, jax.random.PRNGKey(0), 3
    )
  with pytest.raises(ValueError, match="`eig.values`"):
    laplace.sample_velocities(
      EIG._replace(values=EIG.values.at[0].set(jnp.nan)), ALPHA, ETA, jax.random.PRNGKey(0), 3
    )
  with pytest.raises(ValueError, match="`v`"):
    laplace.euclidean(th, jnp.zeros((2, 4)))
