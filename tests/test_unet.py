"""UNet velocity field: shapes, validation, time dependence, first-layer subset, dense-Hessian
HVP check.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import curvature, linalg, nets, unet

SHAPE = (4, 4, 1)
D = 16


@pytest.fixture(scope="module")
def tiny():
  module, u = unet.unet_field(SHAPE, widths=(2, 4), time_dim=4, groups=2, attention=True)
  params = nets.init_params(module, jax.random.PRNGKey(0), D, jnp.float64)
  # conv_out is zero-initialised; perturb all leaves so the field (and its Hessian) is non-trivial.
  leaves, tdef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree_util.tree_unflatten(
    tdef, [l + 0.1 * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)]
  )
  return module, u, params


def test_shapes_and_batch_axes(tiny):
  _, u, p = tiny
  x = jax.random.normal(jax.random.PRNGKey(2), (3, 5, D), jnp.float64)
  out = u(p, x, jnp.full((3, 5), 0.3))
  assert out.shape == (3, 5, D) and out.dtype == jnp.float64
  np.testing.assert_allclose(u(p, x[1, 2], 0.3), out[1, 2], rtol=1e-10, atol=1e-12)
  assert u(p, x[0], 0.7).shape == (5, D)


def test_time_dependence(tiny):
  _, u, p = tiny
  x = jax.random.normal(jax.random.PRNGKey(3), (4, D), jnp.float64)
  assert float(jnp.max(jnp.abs(u(p, x, 0.1) - u(p, x, 0.9)))) > 1e-4


@pytest.mark.parametrize(
  "kw, match",
  [
    (dict(image_shape=(4, 4)), "image_shape"),
    (dict(image_shape=(6, 6, 1), widths=(2, 4, 8)), "divisible"),
    (dict(widths=(3, 4)), "groups"),
    (dict(widths=()), "widths"),
    (dict(conv="fft"), "conv"),
    (dict(num_res_blocks=0), "num_res_blocks"),
  ],
)
def test_validation(kw, match):
  kw = {"image_shape": SHAPE, "widths": (2, 4), "groups": 2, **kw}
  with pytest.raises(ValueError, match=match):
    unet.unet_field(kw.pop("image_shape"), **kw)


def test_wrong_input_dim_raises(tiny):
  _, u, p = tiny
  with pytest.raises(ValueError, match="x"):
    u(p, jnp.zeros((2, D + 1)), 0.5)
  with pytest.raises(ValueError, match="t"):
    u(p, jnp.zeros((2, D)), jnp.zeros((3,)))


def test_matmul_conv_matches_lax():
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 8, 8, 3), jnp.float64)
  for strides in ((1, 1), (2, 2)):
    mm = unet.Conv(5, (3, 3), strides, impl="matmul")
    p = mm.init(jax.random.PRNGKey(5), x)
    ref = jax.lax.conv_general_dilated(
      x,
      p["params"]["kernel"],
      strides,
      ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    ) + p["params"]["bias"].reshape(1, 1, 1, -1)
    np.testing.assert_allclose(mm.apply(p, x), ref, rtol=1e-10, atol=1e-12)


def test_num_params_and_first_layer_subset(tiny):
  _, _, p = tiny
  assert unet.num_params(p) == sum(int(np.size(l)) for l in jax.tree_util.tree_leaves(p))
  sub = curvature.param_subset(p, unet.FIRST_LAYER_SELECT)
  assert sub.selected_names == ("['params']['conv_in']['bias']", "['params']['conv_in']['kernel']")
  assert sub.size == 3 * 3 * 1 * 2 + 2
  new = sub.theta + 1.0
  merged = sub.merge(new)
  np.testing.assert_allclose(sub.flatten(merged), new)
  np.testing.assert_allclose(
    merged["params"]["conv_in"]["kernel"], p["params"]["conv_in"]["kernel"] + 1.0
  )
  others = [
    (a, b)
    for (k, a), b in zip(
      jax.tree_util.tree_flatten_with_path(merged)[0], jax.tree_util.tree_leaves(p)
    )
    if "conv_in" not in jax.tree_util.keystr(k)
  ]
  assert others and all(np.array_equal(a, b) for a, b in others)
  np.testing.assert_array_equal(sub.flatten(sub.merge(sub.theta)), sub.theta)


def test_first_layer_hvp_matches_dense_hessian(tiny):
  _, u, p = tiny
  train = jax.random.normal(jax.random.PRNGKey(6), (5, D), jnp.float64)
  x1, x0, t = curvature.make_triples(jax.random.PRNGKey(7), train, 6)
  sub = curvature.param_subset(p, unet.FIRST_LAYER_SELECT)
  loss = curvature.curvature_loss(u, p, x1, x0, t, subset=sub, alpha=0.5, loss_scale=2.0)
  theta = sub.theta
  v = jax.random.normal(jax.random.PRNGKey(8), theta.shape, jnp.float64)
  # Jitted: op-by-op dispatch of the UNet's nested derivatives took minutes on 2 cores.
  g, hv = jax.jit(lambda th, w: linalg.hvp(loss, th, w))(theta, v)
  np.testing.assert_allclose(g, jax.jit(jax.grad(loss))(theta), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(hv, jax.jit(jax.hessian(loss))(theta) @ v, rtol=1e-9, atol=1e-11)
