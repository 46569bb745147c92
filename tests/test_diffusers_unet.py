"""memjax.models.diffusers_unet against diffusers' own PyTorch forward, from committed fixtures
(tests/fixtures/diffusers, written by benchmarks/diffusers_parity.py with torch + diffusers; no
torch here): the forward at ≤ 1e-5 relative in float32 on three tiny random configs, the
pre-rewrite attention names, DDPM's schedule exact at its timesteps (float64 against the
cumulative product), and the audit's model and CLI wiring with their errors."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax.audit import cli, configs, model
from memjax.models import diffusers_unet

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "diffusers")
NAMES = sorted(os.listdir(FIXTURES))


def test_fixtures_are_present_and_small():
  assert NAMES == ["attn_8x8_grey", "ddpm_like_8x8_rgb", "no_attn_16x16_rgb"]
  total = sum(
    os.path.getsize(os.path.join(FIXTURES, n, f))
    for n in NAMES
    for f in os.listdir(os.path.join(FIXTURES, n))
  )
  assert total < 400_000


@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_diffusers_float32(name):
  folder = os.path.join(FIXTURES, name)
  ld = diffusers_unet.load(folder)
  io = np.load(os.path.join(folder, "io.npz"))
  got = np.asarray(diffusers_unet.apply(ld.module, ld.params, jnp.asarray(io["x"]), io["t"]))
  assert got.dtype == np.float32 and got.shape == io["out"].shape
  rel = np.max(np.abs(got - io["out"])) / np.max(np.abs(io["out"]))
  assert rel <= 1e-5, rel
  # Not a constant or time-blind network: the outputs differ across the four timesteps.
  assert np.min(np.std(io["out"], axis=0)) > 0


def test_pre_rewrite_attention_names_load_to_the_same_parameters():
  from safetensors.numpy import load_file

  state = load_file(os.path.join(FIXTURES, "attn_8x8_grey", diffusers_unet.WEIGHTS_FILE))
  renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  old = {}
  for k, v in state.items():
    for new, was in renames.items():
      if ".attentions." in k and f".{new}." in k:
        k = k.replace(f".{new}.", f".{was}.")
    old[k] = v
  assert any(".query." in k for k in old) and any(".proj_attn." in k for k in old)
  a = diffusers_unet.convert_state_dict(state)
  b = diffusers_unet.convert_state_dict(old)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_ddpm_schedule_is_exact_at_the_timesteps_float64():
  # float64: tests/conftest.py enables x64.
  sched = diffusers_unet.schedule_from_config(1000, 1e-4, 0.02, "linear")
  n = np.arange(1000)
  t = jnp.asarray((n + 1) / 1000.0, jnp.float64)
  alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
  np.testing.assert_allclose(np.asarray(sched.psi(t)) ** 2, alpha_bar, rtol=1e-12)
  np.testing.assert_allclose(np.asarray(sched.sigma(t)) ** 2, 1 - alpha_bar, rtol=1e-10)
  assert float(sched.psi(jnp.float64(0.0))) == 1.0 and float(sched.sigma(jnp.float64(0.0))) == 0
  # ψ' between timesteps: (d/dt) ½ log ᾱ = ½ T log(1 − β_n) on (t_{n−1}, t_n).
  mid = jnp.asarray([(10 + 0.5) / 1000.0], jnp.float64)
  beta_10 = 1e-4 + (0.02 - 1e-4) * 10 / 999
  want = 0.5 * 1000 * np.log1p(-beta_10) * float(sched.psi(mid)[0])
  np.testing.assert_allclose(float(sched.dpsi(mid)[0]), want, rtol=1e-10)
  assert sched is diffusers_unet.schedule_from_config(1000, 1e-4, 0.02, "linear")  # cached
  with pytest.raises(ValueError, match="beta_schedule"):
    diffusers_unet.schedule_from_config(1000, 1e-4, 0.02, "squaredcos_cap_v2")


def test_audit_model_of_a_diffusers_folder(tmp_path):
  folder = os.path.join(FIXTURES, "ddpm_like_8x8_rgb")
  m = model.from_diffusers(folder)
  assert m.parameterisation == "eps" and m.data_shape == (8, 8, 3)
  assert m.schedule.name == "ddpm_linear" and m.info["num_train_timesteps"] == 1000
  io = np.load(os.path.join(folder, "io.npz"))
  t = (io["t"][1:] + 1.0) / 1000.0  # timestep n at t = (n + 1)/T
  got = jax.jit(m.field)(jnp.asarray(io["x"][1:].reshape(3, -1)), jnp.asarray(t, jnp.float32))
  want = io["out"][1:].reshape(3, -1)
  assert np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)) <= 1e-5
  with pytest.raises(ValueError, match=r"takes \(8, 8, 3\)"):
    model.from_diffusers(folder, data_shape=(8, 8, 1))
  # The command's wiring: folder + data source, the data's shape checked once.
  np.save(tmp_path / "imgs.npy", np.zeros((5, 8, 8, 3), np.uint8))
  cfg = configs.get_config("")
  cfg.model.diffusers = folder
  cfg.data.source = str(tmp_path / "imgs.npy")
  m2, d = cli.build(cfg, str(tmp_path))
  assert m2.info["adapter"] == "diffusers" and d.train.shape == (5, 192)
  np.save(tmp_path / "grey.npy", np.zeros((5, 8, 8, 1), np.uint8))
  cfg.data.source = str(tmp_path / "grey.npy")
  with pytest.raises(ValueError, match="takes"):
    cli.build(cfg, str(tmp_path))


def test_unreadable_folders_are_clear_errors(tmp_path):
  src = os.path.join(FIXTURES, "attn_8x8_grey")
  with pytest.raises(ValueError, match="not a directory"):
    diffusers_unet.load(str(tmp_path / "nope"))
  only_bin = tmp_path / "bin"
  only_bin.mkdir()
  shutil.copy(os.path.join(src, "config.json"), only_bin)
  (only_bin / "diffusion_pytorch_model.bin").write_bytes(b"")
  with pytest.raises(ValueError, match="convert them once"):
    diffusers_unet.load(str(only_bin))
  for key, value, match in (
    ("resnet_time_scale_shift", "scale_shift", "resnet_time_scale_shift"),
    ("down_block_types", ["CrossAttnDownBlock2D", "DownBlock2D"], "down_block_types"),
    ("_class_name", "UNet2DConditionModel", "UNet2DConditionModel"),
  ):
    bad = tmp_path / key
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg[key] = value
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
      diffusers_unet.load(str(bad))
  wrong = tmp_path / "wrong"
  shutil.copytree(src, wrong)
  cfg = json.loads((wrong / "config.json").read_text())
  cfg["block_out_channels"] = [4, 4]
  (wrong / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="do not fit its config"):
    diffusers_unet.load(str(wrong))
  sched = tmp_path / "vpred"
  shutil.copytree(src, sched)
  sc = json.loads((sched / "scheduler_config.json").read_text())
  sc["prediction_type"] = "v_prediction"
  (sched / "scheduler_config.json").write_text(json.dumps(sc))
  with pytest.raises(ValueError, match="prediction_type"):
    diffusers_unet.load(str(sched))
