"""Tests for memjax.curvature against dense, independently computed references (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import curvature, linalg, nets, training

ALPHA = 0.1
NUM_DATA = 32
MOD = nets.MLPField(dim=2, hidden=(8, 8), time_dim=8)
U_FN = nets.velocity_fn(MOD)


def _setup():
  k_p, k_d, k_t = jax.random.split(jax.random.PRNGKey(0), 3)
  params = jax.tree_util.tree_map(
    lambda x: x.astype(jnp.float64), nets.init_params(MOD, k_p, 2, jnp.float64)
  )
  data = jax.random.normal(k_d, (NUM_DATA, 2), jnp.float64)
  x1, x0, t = curvature.make_triples(k_t, data, 8)
  return params, x1, x0, t


PARAMS, X1, X0, T = _setup()
SUB_ALL = curvature.param_subset(PARAMS)
SUB_D0 = curvature.param_subset(PARAMS, select=("dense_0",))
LOSS = curvature.curvature_loss(U_FN, PARAMS, X1, X0, T, alpha=ALPHA, num_data=NUM_DATA)
RES_FN = curvature.curvature_residual_fn(U_FN, PARAMS, X1, X0, T)
SCALE = NUM_DATA / X1.shape[0]
THETA = SUB_ALL.theta
P = THETA.shape[0]

hvp_jit = jax.jit(lambda th, v: linalg.hvp(LOSS, th, v))
ggn_jit = jax.jit(lambda th, v: linalg.ggn_vp(RES_FN, th, v, SCALE))


def _dir(seed, p=P):
  return jax.random.normal(jax.random.PRNGKey(seed), (p,), jnp.float64)


def test_triples_shapes_and_ranges():
  assert X1.shape == X0.shape == (8, 2) and T.shape == (8,)
  assert np.all((np.asarray(T) >= 0) & (np.asarray(T) <= 1))


def test_hvp_matches_dense_hessian():
  hess = jax.jit(jax.hessian(LOSS))(THETA)
  grad = jax.grad(LOSS)(THETA)
  for seed in (1, 2):
    v = _dir(seed)
    g, hv = hvp_jit(THETA, v)
    np.testing.assert_allclose(g, grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hv, hess @ v, rtol=1e-9, atol=1e-9 * np.abs(hess @ v).max())


def test_curvature_loss_definition():
  # Independent: s Σ_b ℓ_b(params) + α/2 ||θ||² via training.fm_loss_per_example.
  ref = SCALE * jnp.sum(
    training.fm_loss_per_example(U_FN, PARAMS, X1, X0, T)
  ) + 0.5 * ALPHA * jnp.sum(THETA**2)
  np.testing.assert_allclose(LOSS(THETA), ref, rtol=1e-12)
  # Residuals reproduce the data term: s Σ ||r_b||².
  np.testing.assert_allclose(
    SCALE * jnp.sum(RES_FN(THETA) ** 2) + 0.5 * ALPHA * jnp.sum(THETA**2), ref, rtol=1e-12
  )
  # Explicit loss_scale overrides num_data.
  l2 = curvature.curvature_loss(U_FN, PARAMS, X1, X0, T, alpha=0.0, loss_scale=2.5)
  np.testing.assert_allclose(l2(THETA), 2.5 * jnp.sum(RES_FN(THETA) ** 2), rtol=1e-12)


def test_ggn_vp_matches_dense():
  jac = jax.jacfwd(RES_FN)(THETA).reshape(-1, P)
  v = _dir(3)
  np.testing.assert_allclose(
    ggn_jit(THETA, v), 2 * SCALE * jac.T @ (jac @ v), rtol=1e-10, atol=1e-10
  )


def _leaves_equal(a, b):
  return all(
    np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def test_subset_roundtrip_and_freezing():
  assert _leaves_equal(SUB_ALL.merge(SUB_ALL.flatten(PARAMS)), PARAMS)
  assert SUB_D0.selected_names and all("dense_0" in n for n in SUB_D0.selected_names)
  d0 = PARAMS["params"]["dense_0"]
  assert SUB_D0.size == d0["kernel"].size + d0["bias"].size
  new = _dir(4, SUB_D0.size)
  merged = SUB_D0.merge(new)
  np.testing.assert_array_equal(SUB_D0.flatten(merged), new)
  for name in PARAMS["params"]:
    same = _leaves_equal(merged["params"][name], PARAMS["params"][name])
    assert same == (name != "dense_0"), name
  # Equivalent selections: mask pytree and callable.
  mask = jax.tree_util.tree_map_with_path(lambda p, _: "dense_0" in jax.tree_util.keystr(p), PARAMS)
  assert curvature.param_subset(PARAMS, mask).mask == SUB_D0.mask
  assert curvature.param_subset(PARAMS, lambda n, x: "dense_0" in n).mask == SUB_D0.mask
  with pytest.raises(ValueError, match="`select`"):
    curvature.param_subset(PARAMS, select=("no_such_layer",))


def test_subset_gradient_is_zero_outside_selection():
  loss_b = curvature.curvature_loss(
    U_FN, PARAMS, X1, X0, T, subset=SUB_D0, alpha=ALPHA, num_data=NUM_DATA
  )
  theta_b = SUB_D0.theta
  # Gradient through the subset equals the dense_0 block of the full gradient (+ prior).
  data_term = lambda p: SCALE * jnp.sum(training.fm_loss_per_example(U_FN, p, X1, X0, T))
  full_grad = jax.grad(data_term)(PARAMS)
  np.testing.assert_allclose(
    jax.grad(loss_b)(theta_b), SUB_D0.flatten(full_grad) + ALPHA * theta_b, rtol=1e-10, atol=1e-12
  )
  # Gradient w.r.t. the full params of loss_b∘flatten vanishes on the frozen leaves.
  g = jax.grad(lambda p: loss_b(SUB_D0.flatten(p)))(PARAMS)
  for name, leaf in g["params"].items():
    nz = any(np.any(np.asarray(x) != 0) for x in jax.tree_util.tree_leaves(leaf))
    assert nz == (name == "dense_0"), name


# --- Lanczos and Hutchinson on a random PSD operator with a decaying spectrum.
DIM = 60
_Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, DIM)))
LAM = 10.0 * 0.6 ** np.arange(DIM)
A = jnp.asarray((_Q * LAM) @ _Q.T)
A = 0.5 * (A + A.T)


def test_lanczos_topk_matches_dense_eigh():
  k = 5
  res = jax.jit(lambda key: linalg.lanczos_topk(lambda x: A @ x, DIM, k, key))(
    jax.random.PRNGKey(5)
  )
  w, vecs = np.linalg.eigh(np.asarray(A))
  w, vecs = w[::-1][:k], vecs[:, ::-1][:, :k].T
  assert res.values.shape == (k,) and res.vectors.shape == (k, DIM) and res.residuals.shape == (k,)
  np.testing.assert_allclose(res.values, w, rtol=1e-8)
  overlaps = np.abs(np.sum(np.asarray(res.vectors) * vecs, axis=1))
  np.testing.assert_allclose(overlaps, 1.0, atol=1e-8)
  ref_res = np.linalg.norm(
    np.asarray(res.vectors) @ np.asarray(A)
    - np.asarray(res.values)[:, None] * np.asarray(res.vectors),
    axis=1,
  )
  np.testing.assert_allclose(res.residuals, ref_res, rtol=1e-6, atol=1e-12)
  assert np.all(np.asarray(res.residuals) < 1e-7 * LAM[0])


def test_lanczos_raw_values_and_clip():
  # Indefinite 8x8 operator, full Krylov depth: exact top-3 includes a negative value.
  lam = np.array([3.0, 1.0, -0.5, -2.0, -2.5, -3.0, -3.5, -4.0])
  q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(8, 8)))
  mat = jnp.asarray((q * lam) @ q.T)
  res = linalg.lanczos_topk(lambda x: mat @ x, 8, 3, jax.random.PRNGKey(0), num_iters=8)
  np.testing.assert_allclose(res.values, lam[:3], rtol=1e-10, atol=1e-12)
  clipped = linalg.clip_nonnegative(res)
  np.testing.assert_allclose(clipped.values, [3.0, 1.0, 0.0], atol=1e-12)
  np.testing.assert_array_equal(clipped.vectors, res.vectors)


@pytest.mark.parametrize("sampler", ["signs", "normal"])
def test_hutchinson_within_standard_errors(sampler):
  est, sem = linalg.hutchinson_trace(
    lambda x: A @ x, DIM, jax.random.PRNGKey(7), 300, sampler=sampler
  )
  exact = float(np.trace(np.asarray(A)))
  assert float(sem) > 0
  assert abs(float(est) - exact) < 4 * float(sem), (float(est), exact, float(sem))


def test_input_validation():
  th, v = THETA, _dir(1)
  with pytest.raises(ValueError, match="`theta`"):
    linalg.hvp(LOSS, th[None, :], v)
  with pytest.raises(ValueError, match="`v`"):
    linalg.hvp(LOSS, th, v[:-1])
  with pytest.raises(ValueError, match="`theta`"):
    linalg.hvp(LOSS, th.at[0].set(jnp.nan), v)
  with pytest.raises(ValueError, match="`v` must have the dtype"):
    linalg.hvp(LOSS, th, v.astype(jnp.float32))
  with pytest.raises(ValueError, match="`v`"):
    linalg.ggn_vp(RES_FN, th, v.at[3].set(jnp.inf), 1.0)
  with pytest.raises(ValueError, match="`x0`"):
    curvature.curvature_loss(U_FN, PARAMS, X1, X0[:3], T, alpha=ALPHA, num_data=NUM_DATA)
  with pytest.raises(ValueError, match="`t`"):
    curvature.curvature_loss(U_FN, PARAMS, X1, X0, T[:, None], alpha=ALPHA, num_data=NUM_DATA)
  with pytest.raises(ValueError, match="`x1`"):
    curvature.curvature_loss(U_FN, PARAMS, X1.at[0, 0].set(jnp.nan), X0, T, alpha=ALPHA, num_data=1)
  with pytest.raises(ValueError, match="`num_data`"):
    curvature.curvature_loss(U_FN, PARAMS, X1, X0, T, alpha=ALPHA)
  with pytest.raises(ValueError, match="`alpha`"):
    curvature.curvature_loss(U_FN, PARAMS, X1, X0, T, alpha=-1.0, num_data=NUM_DATA)
  with pytest.raises(ValueError, match="`data`"):
    curvature.make_triples(jax.random.PRNGKey(0), jnp.zeros(5), 3)
  with pytest.raises(ValueError, match="`theta_b`"):
    SUB_D0.merge(jnp.zeros(3))
  with pytest.raises(ValueError, match="`k`"):
    linalg.lanczos_topk(lambda x: x, 4, 5, jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="`num_iters`"):
    linalg.lanczos_topk(lambda x: x, 10, 5, jax.random.PRNGKey(0), num_iters=3)
  with pytest.raises(ValueError, match="`sampler`"):
    linalg.hutchinson_trace(lambda x: x, 4, jax.random.PRNGKey(0), 3, sampler="sphere")
