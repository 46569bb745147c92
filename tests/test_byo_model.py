"""A model memjax did not define, audited end to end: a small linen UNet written here as a user
would (in their own module), trained by their own optax loop on an image folder, saved with
flax.serialization, audited by ``python -m memjax.audit`` (the console script's code) with
``--config.data.source=<folder> --config.model.factory=... --config.model.params=<file>``. Also:
NNX modules, pure functions and orbax directories through :func:`memjax.audit.model.from_factory`,
and the clear errors of the acceptance list."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, serialization
from PIL import Image

from memjax.audit import cli, configs, model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The user's own code, in their own module (not memjax's): a two-level UNet on (B, 8, 8, 1).
USER_MODULE = """
import flax.linen as nn
import jax
import jax.numpy as jnp


class TinyUNet(nn.Module):
  ch: int = 8

  @nn.compact
  def __call__(self, x, t):
    freqs = jnp.exp(jnp.linspace(0.0, 3.0, 4))
    arg = t[:, None] * freqs[None]
    temb = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], -1)
    temb = nn.Dense(self.ch)(nn.silu(nn.Dense(self.ch)(temb)))
    h1 = nn.silu(nn.Conv(self.ch, (3, 3))(x) + temb[:, None, None, :])
    h2 = nn.silu(nn.Conv(2 * self.ch, (3, 3), strides=2)(h1))
    h2 = nn.silu(nn.Conv(2 * self.ch, (3, 3))(h2))
    up = jax.image.resize(h2, h1.shape[:3] + (2 * self.ch,), "nearest")
    h = nn.silu(nn.Conv(self.ch, (3, 3))(jnp.concatenate([up, h1], -1)))
    return nn.Conv(x.shape[-1], (3, 3))(h)


def make_model():
  return TinyUNet()


class NNXNet:  # built lazily below (nnx needs its import inside the factory)
  pass


def make_nnx():
  from flax import nnx

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.lin = nnx.Linear(17, 16, rngs=rngs)

    def __call__(self, x, t):
      return self.lin(jnp.concatenate([x, t[:, None]], -1))

  return Net(nnx.Rngs(0))


def field(params, x, t):
  return params["w"] * x + t[:, None, None]


def make_function():
  return field
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
  root = tmp_path_factory.mktemp("user")
  (root / "user_net.py").write_text(USER_MODULE)
  sys.path.insert(0, str(root))
  import user_net

  # The user's images: 12 grey 8×8 PNGs (four patterns, three noisy copies each).
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
  folder = root / "images"
  folder.mkdir()
  for i in range(12):
    img = np.clip(base[i % 4].astype(int) + rng.integers(-3, 4, (8, 8)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(folder / f"{i:02d}.png")
  x = np.stack([np.asarray(Image.open(folder / f"{i:02d}.png")) for i in range(12)])
  x = (x[..., None].astype(np.float32) / 127.5 - 1.0).astype(np.float32)

  # The user's own flow-matching loop (optax, jit), on shaped images.
  net = user_net.make_model()
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, state, key):
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = jnp.asarray(x)[jax.random.randint(k1, (32,), 0, len(x))]
    x0 = jax.random.normal(k2, x1.shape)
    t = jax.random.uniform(k3, (32,))
    xt = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0

    def loss(p):
      return jnp.mean((net.apply(p, xt, t) - (x1 - x0)) ** 2)

    val, g = jax.value_and_grad(loss)(params)
    upd, state = opt.update(g, state)
    return optax.apply_updates(params, upd), state, val

  state = opt.init(params)
  losses = []
  for i in range(150):
    params, state, val = step(params, state, jax.random.PRNGKey(i))
    losses.append(float(val))
  assert np.mean(losses[-20:]) < np.mean(losses[:20])
  params_file = root / "params.msgpack"
  params_file.write_bytes(serialization.to_bytes(params))
  yield root, str(folder), str(params_file), params, x
  sys.path.remove(str(root))


@pytest.mark.slow  # ≈ 45 s idle, 70 s on the loaded 2-core machine (plus ≈ 5–40 s of training)
def test_audit_of_a_user_linen_unet_through_the_command(user, tmp_path):
  root, folder, params_file, _, _ = user
  workdir = tmp_path / "audit"
  argv = [
    f"--config={os.path.join(ROOT, 'memjax', 'audit', 'configs.py')}:smoke",
    "--config.experiment=user",
    f"--config.workdir={workdir}",
    f"--config.data.source={folder}",
    "--config.model.factory=user_net:make_model",
    f"--config.model.params={params_file}",
    "--config.weight_space.enabled=False",
    "--config.sample.num_samples=8",
    "--config.summary.held_out_control=False",
  ]
  env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{ROOT}", JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "-m", "memjax.audit", *argv],
    cwd=str(tmp_path),
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "memorised" in out.stdout and "report:" in out.stdout
  with open(workdir / "summary.json") as f:
    summary = json.load(f)
  m = summary["model"]
  assert m["adapter"] == "linen" and m["module"] == "TinyUNet" and m["data_shape"] == [8, 8, 1]
  assert m["factory"] == "user_net:make_model" and m["data_source"] == folder
  assert m["num_train"] == 12 and len(m["data_sha256"]) == 64
  assert summary["summary"]["num_samples"] == 8
  assert os.path.getsize(workdir / "report.html") > 1000


def test_linen_params_from_msgpack_and_orbax_give_the_same_field(user, tmp_path):
  import orbax.checkpoint as ocp

  _, _, params_file, params, x = user
  a = model.from_factory("user_net:make_model", params_file, data_shape=(8, 8, 1))
  with ocp.StandardCheckpointer() as ck:
    ck.save(str(tmp_path / "orbax"), params["params"])  # the bare params, not the variables
  b = model.from_factory("user_net:make_model", str(tmp_path / "orbax"), data_shape=(8, 8, 1))
  rows, t = jnp.asarray(x[:3].reshape(3, -1)), jnp.full((3,), 0.4)
  import user_net

  want = user_net.make_model().apply(params, jnp.asarray(x[:3]), t).reshape(3, -1)
  np.testing.assert_allclose(a.field(rows, t), want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(b.field(rows, t), want, rtol=1e-6, atol=1e-6)


def test_nnx_module_and_pure_function_factories(user, tmp_path):
  import user_net

  m = model.from_factory("user_net:make_nnx", data_shape=(16,))
  x, t = jnp.ones((2, 16)), jnp.full((2,), 0.5)
  want = user_net.make_nnx()(x, t)
  np.testing.assert_allclose(m.field(x, t), want, rtol=1e-6)
  assert m.info["adapter"] == "nnx"
  # NNX state from a msgpack of the pure dict: replaced, not the module's own initialisation.
  net = user_net.make_nnx()
  state = nnx.to_pure_dict(nnx.state(net))
  state["lin"]["bias"] = np.full((16,), 2.0, np.float32)
  (tmp_path / "nnx.msgpack").write_bytes(serialization.msgpack_serialize(state))
  m2 = model.from_factory("user_net:make_nnx", str(tmp_path / "nnx.msgpack"), data_shape=(16,))
  np.testing.assert_allclose(m2.field(x, t), want - net.lin.bias[...][None] + 2.0, rtol=1e-6)
  (tmp_path / "f.msgpack").write_bytes(serialization.msgpack_serialize({"w": np.float32(3.0)}))
  f = model.from_factory(
    "user_net:make_function", str(tmp_path / "f.msgpack"), data_shape=(2, 2), parameterisation="eps"
  )
  np.testing.assert_allclose(f.field(jnp.ones((1, 4)), jnp.ones((1,))), 4.0)
  assert f.parameterisation == "eps" and f.info["adapter"] == "function"


def _cfg(**kw):
  cfg = configs.get_config("")
  for k, v in kw.items():
    node = cfg
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return cfg


def test_clear_errors(user, tmp_path):
  root, folder, params_file, _, _ = user
  base = {"data.source": folder, "model.factory": "user_net:make_model"}
  with pytest.raises(ValueError, match="`model.params` .*does not exist"):
    cli.build(_cfg(**base, **{"model.params": str(tmp_path / "missing.msgpack")}), str(tmp_path))
  with pytest.raises(ValueError, match="`model.parameterisation` must be one of"):
    cli.build(
      _cfg(**base, **{"model.params": params_file, "model.parameterisation": "noise"}),
      str(tmp_path),
    )
  with pytest.raises(ValueError, match="`data.source` is required"):
    cli.build(_cfg(**{"model.factory": "user_net:make_model", "model.params": params_file}), "")
  with pytest.raises(ValueError, match="nothing to audit"):
    cli.build(_cfg(), str(tmp_path))
  # Shape mismatch between model and data: RGB 8×8 images for a grey-image UNet's params.
  rgb = tmp_path / "rgb"
  rgb.mkdir()
  for i in range(3):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb / f"{i}.png")
  with pytest.raises(ValueError, match="do not fit the model.*shapes"):
    cli.build(_cfg(**{**base, "data.source": str(rgb), "model.params": params_file}), "")
  with pytest.raises(ValueError, match="`model.data_shape`"):
    cli.build(
      _cfg(**base, **{"model.params": params_file, "model.data_shape": (4, 4, 1)}), str(tmp_path)
    )
  with pytest.raises(ValueError, match="`factory` .*no function 'nope'"):
    model.from_factory("user_net:nope", params_file, data_shape=(8, 8, 1))
  (tmp_path / "junk.msgpack").write_bytes(b"\x00\x01junk")
  with pytest.raises(ValueError, match="not a flax.serialization msgpack"):
    model.load_params(str(tmp_path / "junk.msgpack"))
