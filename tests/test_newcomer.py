"""A new user's first hour: each finding of the newcomer review pinned by a test that failed before.

Findings of the audit-validity review live in ``tests/test_audit*.py``; these are the ones about
dead ends, logs and silent misuse.
"""

import functools
import io
import json
import logging
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import _progress, audit

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_model_repr_is_a_summary_not_the_parameters():
  params = {"w": jnp.ones((40, 40)), "b": jnp.zeros(40)}
  model = audit.from_function(
    lambda p, x, t: x @ p["w"][:3, :3] + p["b"][None, :3], params, data_shape=(3,)
  )
  text = repr(model)
  assert "1,640 parameters in 2 arrays" in text and "linear_fm" in text
  assert len(text) < 200 and "Array(" not in text


def test_progress_bar_is_sparse_off_a_terminal():
  buf = io.StringIO()  # not a TTY
  bar = _progress.bar(total=1000, file=buf, desc="x")
  for _ in range(1000):
    bar.update(1)
  bar.close()
  assert buf.getvalue().count("\r") <= 3  # the start, at most one timed refresh, the end


def test_reading_a_checkpoint_logs_no_orbax_read_only_warnings(tmp_path, caplog):
  from memjax import nets, training

  mod = nets.MLPField(dim=2, hidden=(4,), time_dim=4)
  params = nets.init_params(mod, jax.random.PRNGKey(0), 2)
  data = jax.random.normal(jax.random.PRNGKey(1), (16, 2))
  import optax

  training.train(
    training.fm_objective(nets.velocity_fn(mod), data, 8),
    params,
    optax.adam(1e-2),
    2,
    jax.random.PRNGKey(2),
    progress=False,
    checkpoint_dir=str(tmp_path / "ck"),
  )
  with caplog.at_level(logging.WARNING):
    audit.read_checkpoint(str(tmp_path / "ck"))
  noisy = [r for r in caplog.records if "read_only=True" in r.getMessage()]
  noisy += [r for r in caplog.records if "read only" in r.getMessage()]
  assert not noisy, [r.getMessage() for r in noisy]


def test_config_variants_are_reachable_from_any_directory(tmp_path, monkeypatch):
  from memjax.audit import cli

  monkeypatch.chdir(tmp_path)
  by_module = cli.resolve_config_spec("memjax.audit.configs:toy")
  assert by_module.endswith("configs.py:toy") and by_module.split(":")[0] == cli.CONFIG
  assert cli.resolve_config_spec(":smoke") == cli.CONFIG + ":smoke"
  with pytest.raises(ValueError, match="neither a config file nor an importable module"):
    cli.resolve_config_spec("no_such_pkg.configs:toy")
  with pytest.raises(ValueError, match="does not exist"):
    cli.resolve_config_spec("memjax/audit/configs.py:toy")  # a relative path from elsewhere


def test_a_failed_audit_leaves_no_empty_run_directory(tmp_path):
  from memjax.audit import cli, configs

  cfg = configs.get_config("smoke")
  cfg.checkpoint = str(tmp_path / "missing")
  workdir = tmp_path / "runs" / "audit" / "x"
  with pytest.raises(ValueError):
    cli.audit(cfg, str(workdir))
  assert not (tmp_path / "runs").exists()


def test_a_plain_orbax_checkpoint_gets_a_clear_error(tmp_path):
  import orbax.checkpoint as ocp

  mngr = ocp.CheckpointManager(
    str(tmp_path / "plain"), options=ocp.CheckpointManagerOptions(create=True)
  )
  mngr.save(0, args=ocp.args.StandardSave({"w": np.ones(3)}))
  mngr.wait_until_finished()
  mngr.close()
  with pytest.raises(ValueError, match="not a memjax.training checkpoint.*load_params"):
    audit.read_checkpoint(str(tmp_path / "plain"))


def test_weight_space_errors_name_the_audit_config_keys():
  from memjax.audit import configs

  model = audit.from_function(
    lambda p, x, t: jnp.tanh(x @ p) * (1.0 + t[:, None]), 0.5 * jnp.eye(3), data_shape=(3,)
  )
  cfg = configs.get_config("smoke")  # select="out": the layer name of memjax's own toy MLP
  cfg.sample.num_samples = 6
  cfg.lid.update(num_t0=3, lpca_k=5)
  cfg.regimes.num_sigmas = 4
  train = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (10, 3)))
  with pytest.raises(ValueError, match=r"weight-space lens: `weight_space.select` \(select\)"):
    audit.run(model, train, jax.random.PRNGKey(1), cfg, held_out=train[:5] + 0.1, progress=False)


def test_a_misspelt_audit_config_key_is_refused():
  cfg = audit.configs.get_config("smoke")
  with pytest.raises(AttributeError, match="lpcak"):
    cfg.lid.lpcak = 8
  cfg.lid.lpca_k = 8  # the real key still works


@functools.lru_cache(maxsize=1)
def _own_linen_model():
  """An own linen velocity MLP trained on 8-D points (noise at t = 0, data at t = 1)."""
  import flax.linen as nn
  import optax

  class Velocity(nn.Module):
    @nn.compact
    def __call__(self, x, t):
      h = jnp.concatenate([x, jnp.sin(jnp.pi * t)[:, None], jnp.cos(jnp.pi * t)[:, None]], -1)
      h = nn.gelu(nn.Dense(64)(nn.gelu(nn.Dense(64)(h))))
      return nn.Dense(x.shape[-1])(h)

  rng = np.random.default_rng(0)
  train = (3.0 + 0.3 * rng.normal(size=(48, 8))).astype(np.float32)  # data away from the noise
  held = (3.0 + 0.3 * rng.normal(size=(32, 8))).astype(np.float32)
  module = Velocity()
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 8)), jnp.zeros((1,)))
  opt = optax.adam(2e-3)

  def loss(p, key):
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = jnp.asarray(train)[jax.random.randint(k1, (64,), 0, len(train))]
    x0 = jax.random.normal(k2, x1.shape)
    t = jax.random.uniform(k3, (64,))
    xt = (1 - t)[:, None] * x0 + t[:, None] * x1
    return jnp.mean(jnp.sum((module.apply(p, xt, t) - (x1 - x0)) ** 2, -1))

  @jax.jit
  def step(p, s, key):
    g = jax.grad(loss)(p, key)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  state = opt.init(params)
  for i in range(600):
    params, state = step(params, state, jax.random.PRNGKey(i))
  return module, params, train, held


def _toy_linen_audit(reverse_time: bool):
  """The own model audited as given, or in the reversed time convention (noise at t = 1): the
  newcomer's silent-failure case."""
  module, params, train, held = _own_linen_model()
  if reverse_time:  # the same network handed over as if trained with noise at t = 1
    model = audit.from_function(
      lambda p, x, t: -module.apply(p, x, 1.0 - t), params, data_shape=(8,)
    )
  else:
    model = audit.from_linen(module, params, data_shape=(8,))
  cfg = _own_audit_config()
  return audit.run(model, train, jax.random.PRNGKey(1), cfg, held_out=held, progress=False)


def _own_audit_config():
  """The audit config of :func:`_toy_linen_audit`: memorisation and LID only, at test size."""
  cfg = audit.configs.get_config()
  cfg.sample.num_samples = 16
  cfg.lid.update(num_t0=3, lpca_k=8)
  cfg.sharpness.enabled = cfg.regimes.enabled = cfg.weight_space.enabled = False
  return cfg


def test_samples_far_from_all_data_are_warned_about():
  wrong = _toy_linen_audit(reverse_time=True)
  assert wrong.summary["warnings"] and "time convention" in wrong.summary["warnings"][0]
  assert "WARNING" in audit.report.render(wrong)
  right = _toy_linen_audit(reverse_time=False)
  assert right.summary["warnings"] == []


def test_python_api_report_shows_the_config_it_used_and_a_verdict(tmp_path):
  rep = _toy_linen_audit(reverse_time=False)
  cfg = _own_audit_config()  # the config the audit above ran with
  files = audit.report.write(rep, str(tmp_path), cfg)
  with open(files["json"]) as f:
    used = json.load(f)["config"]
  # No toy block, no checkpoint or experiment label the Python API never had; lenses that did
  # not run keep only their switch; what was set is there.
  assert "toy" not in used and "experiment" not in used and "checkpoint" not in used
  assert used["sharpness"] == used["regimes"] == used["weight_space"] == {"enabled": False}
  assert used["lid"]["lpca_k"] == 8 and used["sample"]["num_samples"] == 16
  assert set(used["model"]) == {"schedule", "parameterisation"}
  page = open(files["html"]).read()
  assert "dup_offset" not in page and "laplace.images" not in page
  v = rep.summary["verdict"]
  n, m = rep.summary["num_scored"], rep.summary["num_memorised"]
  assert v.startswith(f"{m} of {n} generated samples") and "Verdict." in page
  assert "what it measures" in page
  for name, row in rep.summary["detection"].items():
    assert row["meaning"] == audit.lenses.detector_meaning(name)


def test_danger_zone_is_reported_in_the_models_own_time():
  from memjax import paths
  from memjax.audit import lenses

  bounds = {"danger_lo": 0.5, "danger_hi": 2.0, "sigma_small": 0.1, "sigma_large": 9.0}
  bounds["threshold"] = 0.8
  nan = np.full(3, np.nan)
  reg = lenses.Regimes(np.ones(3), nan, nan, np.ones(3), bounds, nan, nan, True)
  rcfg = audit.configs.get_config().regimes
  fm = lenses._danger_zone(reg, rcfg, paths.linear_fm())  # noise at t = 0: t = 1/(1 + σ)
  np.testing.assert_allclose([fm["t_lo"], fm["t_hi"]], [1 / 3, 2 / 3], rtol=1e-5)
  assert "the model's time t ∈ [0.333, 0.667]" in fm["text"] and "VE σ ∈ [0.5, 2]" in fm["text"]
  vp = paths.SCHEDULES["vp_linear"]()
  dz = lenses._danger_zone(reg, rcfg, vp)  # VP: noise at t = 1; σ/ψ at the ends is the zone's
  ratios = sorted(float(paths.noise_to_signal(vp, t)) for t in (dz["t_lo"], dz["t_hi"]))
  np.testing.assert_allclose(ratios, [0.5, 2.0], rtol=1e-3)
  empty = reg._replace(boundaries={**bounds, "danger_hi": 0.5})
  assert lenses._danger_zone(empty, rcfg, vp)["text"] == "none found"


def test_copies_are_counted_per_training_point_with_their_multiplicity():
  from memjax.audit import lenses

  a, b, c = np.eye(3)
  train = np.stack([a, b, a, c, a, b])  # a three times, b twice, c once
  nearest = np.array([0, 2, 4, 1, 3, 0, 5])  # rows of train (any copy of the same point)
  flags = np.array([1, 1, 1, 1, 1, 0, 0], bool)
  mem = lenses.Memorisation(nearest, nearest, *(np.zeros(7),) * 3, {"0.3333": flags}, {}, 1 / 3)
  out = lenses.copies_per_training_point(mem, train)
  assert out["rows"] == [
    {"training_index": 0, "copied_by": 3, "multiplicity": 3},
    {"training_index": 1, "copied_by": 1, "multiplicity": 2},
    {"training_index": 3, "copied_by": 1, "multiplicity": 1},
  ]
  assert (out["num_distinct_copied"], out["num_duplicated_in_train"]) == (3, 2)
  assert out["num_duplicated_copied"] == 2


_RECIPE = re.compile(r"<!-- new-user-recipe -->(.*?)<!-- /new-user-recipe -->", re.S)
_BLOCK = re.compile(r"^```(python|bash)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def recipe_blocks(text: str) -> list[tuple[str, str]]:
  """``[(language, code)]`` of the new-user recipe between the README's markers, in order."""
  m = _RECIPE.search(text)
  assert m, "README.md has no <!-- new-user-recipe --> section"
  return [(b.group(1), b.group(2)) for b in _BLOCK.finditer(m.group(1))]


def test_readme_new_user_recipe_runs_as_written(tmp_path):
  """The README's recipe, as a new user runs it: the network file, training and the Python-API
  audit, then the shell command; the two audits agree, and the copied points are found."""
  blocks = recipe_blocks((ROOT / "README.md").read_text())
  assert [lang for lang, _ in blocks] == ["python", "python", "bash"]
  (tmp_path / "my_velocity.py").write_text(blocks[0][1])
  (tmp_path / "train_and_audit.py").write_text(blocks[1][1])
  env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
  env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env["PATH"]])
  for name in ("JAX_ENABLE_X64", "JAX_NUMPY_RANK_PROMOTION", "XLA_FLAGS"):
    env.pop(name, None)  # the user's JAX defaults
  run = lambda cmd: subprocess.run(
    cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
  )
  py = run([sys.executable, "train_and_audit.py"])
  assert py.returncode == 0, py.stderr[-4000:]
  sh = run(["bash", "-euo", "pipefail", "-c", blocks[2][1]])
  assert sh.returncode == 0, sh.stderr[-4000:]
  got = {}
  for d in ("my_audit", "my_audit_cli"):
    with open(tmp_path / d / "summary.json") as f:
      got[d] = json.load(f)["summary"]
  a, b = got["my_audit"], got["my_audit_cli"]
  assert py.stdout.strip().endswith(a["verdict"].strip()[-40:])
  assert a["num_memorised"] == b["num_memorised"] and a["M_c"] == pytest.approx(b["M_c"], abs=1e-6)
  assert "verdict:" in sh.stdout and not a["warnings"]
  # The three copied points (rows 40, 48, 56 first; 8 copies each) are among the copied ones.
  rows = {r["training_index"]: r for r in a["copies"]["rows"]}
  assert {40, 48, 56} <= set(rows) and all(rows[i]["multiplicity"] == 8 for i in (40, 48, 56))
