"""memjax.audit: the model description, the lenses, the report files and the CLI.

The smoke run goes through the real ``memjax-audit`` entry point once (module fixture) on the
known-answer toy: a small MLP TRAINED on a set with one point copied many times.
"""

import csv
import html.parser
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memjax import audit, memorisation, neighbours, paths
from memjax.audit import cli, configs, lenses, report, toy

CONFIG = os.path.join(os.path.dirname(audit.__file__), "configs.py")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("audit_smoke"))
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["memjax-audit", f"--config={CONFIG}:smoke", f"--config.workdir={workdir}"])
  assert exit_info.value.code in (0, None)
  with open(os.path.join(workdir, report.JSON_FILE)) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, report.CSV_FILE)) as f:
    rows = list(csv.DictReader(f))
  return workdir, summary, rows


def test_cli_writes_the_three_files(smoke):
  workdir, summary, rows = smoke
  for name in (report.HTML_FILE, report.CSV_FILE, report.JSON_FILE):
    assert os.path.getsize(os.path.join(workdir, name)) > 1000, name
  cfg = configs.get_config("smoke")
  s = summary["summary"]
  assert len(rows) == s["num_samples"] == cfg.sample.num_samples
  assert summary["model"]["adapter"] == "checkpoint"
  assert summary["model"]["experiment"] == "audit.toy"
  for col in ("ratio", "nearest", "flipd", "flipd_sem", "lid_star", "mmh_paper", "neg_trace_det"):
    assert col in rows[0], col
  assert "laplace_memorised_fraction_riemannian" in rows[0]
  assert set(s["detection"]) >= {"neg_flipd", "neg_trace_det", "score_sq_det"}
  assert "denoising_residual" in rows[0] and "denoising_residual" not in s["detection"]
  assert "detection_vs_held_out" not in s and "membership_baseline" in s
  assert s["lid"]["t0_source"] == "fixed"
  np.testing.assert_allclose(s["lid"]["noise_to_signal"], configs.LID_PAPER_NOISE_TO_SIGNAL, 1e-4)
  assert set(s["mmh_counts"]) == {"not_memorised", "od_mem", "dd_mem", "other_mem"}
  assert sum(s["mmh_counts"].values()) == s["num_scored"]
  assert set(s["weight_space"]["M_c"]) == {"euclidean", "riemannian"}
  assert {"lo", "hi"} <= set(s["danger_zone"])
  assert set(s["seconds"]) >= {"generate", "memorisation", "lid", "sharpness", "regimes"}


def test_known_answer_duplicates_are_flagged(smoke):
  _, summary, rows = smoke
  d = toy.make_data(configs.get_config("smoke").toy.data)
  is_copy = np.all(d.train == d.duplicate, axis=1)
  copies = set(np.flatnonzero(is_copy).tolist())
  assert len(copies) == d.num_copies > 10
  # Samples the model put ON the copied point (within a third of its distance to the rest).
  gap = np.min(np.linalg.norm(d.train[~is_copy] - d.duplicate, axis=1))
  scored = [r for r in rows if r["scored"] == "1"]
  on_dup = [r for r in scored if int(r["nearest"]) in copies and float(r["d1"]) < gap / 3]
  assert len(on_dup) >= 4, "the model does not reproduce the copied point"
  label = f"memorised_c{memorisation.c_label(1 / 3)}"
  assert all(r[label] == "1" for r in on_dup)
  assert all(r["mmh_paper"] != "not_memorised" for r in on_dup)
  # The memorised samples are the copies' (the broad part sits far above the chance floor).
  flagged = [r for r in scored if r[label] == "1"]
  assert np.mean([int(r["nearest"]) in copies for r in flagged]) >= 0.8
  others = [r for r in scored if int(r["nearest"]) not in copies]
  assert np.mean([r[label] == "1" for r in others]) < 0.2
  # The copies: LID* = 0 (the data there is a point) but the model's FLIPD at the detection
  # level stays well above it, so the MMH class is neither OD- nor DD-Mem.
  assert all(float(r["lid_star"]) == 0.0 and float(r["flipd"]) > 1.0 for r in on_dup)
  assert all(r["mmh_paper"] == r["mmh_exact_duplicate"] == "other_mem" for r in on_dup)
  # The most copied training point is the duplicated one, with its multiplicity.
  top = summary["summary"]["copies"]["rows"][0]
  assert top["training_index"] in copies and top["multiplicity"] == d.num_copies
  assert top["copied_by"] >= len(on_dup)


# Each detector of the known-answer smoke: the AUROC band (in the direction fixed a priori,
# never flipped) and its status. The :smoke run reads −FLIPD 0.83, noisy −tr∇s 0.97, noisy
# ||s||² 0.90, −tr∇s at σ/ψ 13.12 0.79, ||s||² there 0.45 and LID* − FLIPD 0.13
# (docs/guide/audit.md, "The known-answer case"); the bands leave room for float differences
# between machines, not for a flipped sign.
KNOWN_ANSWER = {
  "neg_flipd": (0.65, 1.0, "separates"),
  "neg_trace_det": (0.85, 1.0, "separates"),
  "score_sq_det": (0.75, 1.0, "separates"),
  "neg_trace_nsr13.12": (0.6, 1.0, None),
  "score_sq_nsr13.12": (0.2, 0.7, None),
  "lid_star_minus_flipd": (0.0, 0.35, lenses.INVERTED),
}


def test_known_answer_detectors_have_their_band_and_direction(smoke):
  _, summary, _ = smoke
  det = summary["summary"]["detection"]
  assert set(det) == set(KNOWN_ANSWER)
  for name, (lo, hi, status) in KNOWN_ANSWER.items():
    row = det[name]
    assert row["direction"] == lenses.detector_direction(name), name
    assert lo <= row["auroc"] <= hi, (name, row["auroc"])
    if status is not None:
      assert row["status"].startswith(status), (name, row["status"])
  v = summary["summary"]["verdict"]
  for name in ("neg_flipd", "neg_trace_det", "score_sq_det"):
    assert name in v.split("At chance")[0], v
  assert "lid_star_minus_flipd" in v.split("Inverted")[1], v


class _Sections(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.ids, self.imgs = [], []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if tag == "section":
      self.ids.append(attrs.get("id"))
    if tag == "img":
      self.imgs.append(attrs.get("src", ""))


def test_html_parses_with_every_section_and_embedded_figures(smoke):
  workdir, _, _ = smoke
  with open(os.path.join(workdir, report.HTML_FILE)) as f:
    page = f.read()
  parser = _Sections()
  parser.feed(page)
  parser.close()
  assert parser.ids == [i for i, _ in report.SECTIONS]
  assert len(parser.imgs) >= 6
  assert all(src.startswith("data:image/png;base64,") for src in parser.imgs)
  for title in ("Summary", "Most memorised samples", "Noise regimes", "Weight space"):
    assert f">{title}</h2>" in page


# ---------------------------------------------------------------------------
# Adapters: the same function through linen, NNX and a plain function.

D = 3


class _LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x, t):
    h = jnp.concatenate([x, jnp.broadcast_to(t, x.shape[:-1])[..., None]], -1)
    return nn.Dense(D)(jnp.tanh(nn.Dense(8)(h)))


class _NnxNet(nnx.Module):
  def __init__(self, p):
    self.l0 = nnx.Linear(D + 1, 8, rngs=nnx.Rngs(0))
    self.l1 = nnx.Linear(8, D, rngs=nnx.Rngs(0))
    # linen names layers in construction order: Dense_0 is the output layer.
    self.l0.kernel[...] = p["Dense_1"]["kernel"]
    self.l0.bias[...] = p["Dense_1"]["bias"]
    self.l1.kernel[...] = p["Dense_0"]["kernel"]
    self.l1.bias[...] = p["Dense_0"]["bias"]

  def __call__(self, x, t):
    h = jnp.concatenate([x, jnp.broadcast_to(t, x.shape[:-1])[..., None]], -1)
    return self.l1(jnp.tanh(self.l0(h)))


def _plain(p, x, t):
  h = jnp.concatenate([x, jnp.broadcast_to(t, x.shape[:-1])[..., None]], -1)
  a, b = p["params"]["Dense_1"], p["params"]["Dense_0"]
  return jnp.tanh(h @ a["kernel"] + a["bias"][None]) @ b["kernel"] + b["bias"][None]


def _small_cfg():
  cfg = configs.get_config("smoke")
  cfg.sample.update(num_samples=6, rtol=1e-4, atol=1e-4)
  cfg.lid.update(num_t0=3, lpca_k=5)
  cfg.sharpness.noise_to_signal = ()
  cfg.regimes.enabled = False
  cfg.weight_space.enabled = False
  return cfg


def test_adapters_give_identical_scores():
  module = _LinenNet()
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, D)), jnp.zeros((1,)))
  variables = jax.tree.map(lambda a: 0.5 * a, variables)
  train = jax.random.normal(jax.random.PRNGKey(1), (20, D))
  models = {
    "linen": audit.from_linen(module, variables, data_shape=(D,)),
    "nnx": audit.from_nnx(_NnxNet(variables["params"]), data_shape=(D,)),
    "function": audit.from_function(_plain, variables, data_shape=(D,)),
  }
  cfg, key = _small_cfg(), jax.random.PRNGKey(2)
  reps = {n: audit.run(m, train, key, cfg, progress=False) for n, m in models.items()}
  ref = report.sample_columns(reps["function"])
  for name in ("linen", "nnx"):
    assert reps[name].model["adapter"] == name
    cols = report.sample_columns(reps[name])
    assert set(cols) == set(ref)
    for col, values in ref.items():
      if values.dtype.kind == "f":
        np.testing.assert_allclose(cols[col], values, rtol=1e-6, atol=1e-9, err_msg=col)
      else:
        np.testing.assert_array_equal(cols[col], values, err_msg=col)


# ---------------------------------------------------------------------------
# Float64 checks of the audit's own pieces against closed forms.


def test_generation_of_an_exact_gaussian_field_any_schedule_float64():
  # Data N(0, c I): ε̂(y, t) = σ y / (ψ² c + σ²); the probability flow keeps
  # y / sqrt(ψ² c + σ²) fixed, so x(t_end) = x(t_start) sqrt((ψe² c + σe²) / (ψs² c + σs²)).
  c = 0.3
  for sched in (paths.vp_linear(), paths.linear_fm()):

    def eps(params, y, t, sched=sched):
      psi, sig = sched.psi(t)[:, None], sched.sigma(t)[:, None]
      return sig * y / (psi**2 * c + sig**2)

    m = audit.from_function(eps, None, schedule=sched, parameterisation="eps", data_shape=(2,))
    scfg = _small_cfg().sample
    scfg.update(num_samples=5, rtol=1e-9, atol=1e-9)
    gen = lenses.generate(m, jax.random.PRNGKey(0), scfg)
    ts, te = lenses.time_span(m, scfg.t_margin)
    var = lambda t, s=sched: float(s.psi(jnp.asarray(t)) ** 2 * c + s.sigma(jnp.asarray(t)) ** 2)
    np.testing.assert_allclose(gen.samples, gen.noise * np.sqrt(var(te) / var(ts)), rtol=1e-6)
    assert gen.ok.all()


def test_memorisation_lens_maps_to_original_rows_float64():
  train = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (12, 3), jnp.float64))
  train = np.concatenate([train, train[[4, 4, 7]]])  # copies of rows 4 and 7
  q = train[[4, 7, 1]] + 1e-3
  cfg = configs.get_config("smoke").memorisation
  mem = lenses.memorisation_lens(q, np.ones(3, bool), train, cfg)
  d = np.linalg.norm(q[:, None] - np.unique(train, axis=0)[None], axis=-1)
  d.sort(axis=1)
  np.testing.assert_allclose(mem.ratio, (d[:, 0] / d[:, 1]) ** 2, rtol=1e-10)
  np.testing.assert_array_equal(mem.nearest, [4, 7, 1])
  nn = neighbours.nearest_two(jnp.asarray(q), jnp.asarray(train[:12]))
  np.testing.assert_allclose(mem.d1, nn.d1, rtol=1e-10)
  assert mem.memorised[memorisation.c_label(1 / 3)].all()


def test_guided_velocity_is_the_cfg_combination_float64():
  def f(params, x, t, y):
    return x * (1.0 + y[:, None]) + t[:, None]

  cond = audit.Conditioning(num_classes=2, null_label=2, guidance=3.0)
  m = audit.from_function(f, None, data_shape=(2,), cond=cond)
  x = jnp.asarray([[0.5, -1.0]], jnp.float64)
  t = jnp.asarray([0.3], jnp.float64)
  got = m.velocity((None, jnp.asarray(1)), x, t)
  base, c1 = f(None, x, t, jnp.asarray([2])), f(None, x, t, jnp.asarray([1]))
  np.testing.assert_allclose(got, base + 3.0 * (c1 - base), rtol=1e-12)


# ---------------------------------------------------------------------------
# Validation.


def test_model_validation_names_the_argument():
  f = lambda p, x, t: x
  with pytest.raises(ValueError, match="`parameterisation`"):
    audit.from_function(f, None, parameterisation="noise", data_shape=(2,))
  with pytest.raises(ValueError, match="`schedule`"):
    audit.Model(f, None, "linear_fm", "velocity", (2,))
  with pytest.raises(ValueError, match="`data_shape`"):
    audit.from_function(f, None, data_shape=(0,))
  with pytest.raises(ValueError, match="`apply_fn` must return shape"):
    audit.from_function(lambda p, x, t: x[:, :1], None, data_shape=(2,))
  with pytest.raises(ValueError, match="`apply_fn` failed"):
    audit.from_function(lambda p, x, t: p["w"] * x, {"v": 1.0}, data_shape=(2,))
  with pytest.raises(ValueError, match="`params"):
    audit.from_function(f, {"w": jnp.asarray(jnp.nan)}, data_shape=(2,))
  m = audit.from_function(f, None, data_shape=(2,))
  with pytest.raises(ValueError, match="`train`"):
    audit.run(m, np.zeros((4, 3)), jax.random.PRNGKey(0), _small_cfg(), progress=False)
  cfg = _small_cfg()
  cfg.lid.num_probes = 0
  with pytest.raises(ValueError, match="`cfg.lid.num_probes`"):
    audit.run(m, np.zeros((4, 2)), jax.random.PRNGKey(0), cfg, progress=False)
  cfg = _small_cfg()
  cfg.sample.rtol = float("nan")
  with pytest.raises(ValueError, match="`cfg.sample.rtol`"):
    audit.run(m, np.zeros((4, 2)), jax.random.PRNGKey(0), cfg, progress=False)


def test_checkpoint_with_the_wrong_config_is_refused(smoke):
  workdir, _, _ = smoke
  exp = configs.get_config("smoke").toy.to_dict()
  exp["model"]["hidden"] = [16, 16]
  with pytest.raises(ValueError, match="`experiment_config`"):
    audit.from_checkpoint(os.path.join(workdir, "checkpoints"), exp)
  cfg = configs.get_config("smoke")
  cfg.checkpoint = os.path.join(workdir, "checkpoints")
  m, d = cli.build(cfg, workdir)  # the data from the recipe stored in the checkpoint
  np.testing.assert_array_equal(d.train, toy.make_data(cfg.toy.data).train)
  assert m.info["data_sha256"] == d.info["data_sha256"] and d.held_out.shape == (32, 8)
  cfg.toy.data.seed = 1  # another training set than the one hashed in the checkpoint
  other = os.path.join(workdir, "other.npy")
  np.save(other, toy.make_data(cfg.toy.data).train)
  cfg.data.source = other
  with pytest.raises(ValueError, match="differs from the data hashed"):
    cli.build(cfg, workdir)
  m = audit.from_checkpoint(os.path.join(workdir, "checkpoints"))  # config from the metadata
  assert m.info["ema"] and m.data_shape == (configs.get_config("smoke").toy.data.dim,)


def test_conditional_model_gets_the_guidance_lens():
  from memjax import nets

  module = nets.CondMLPField(dim=D, num_classes=2, hidden=(8,), time_dim=4)
  variables = nets.init_cond_params(module, jax.random.PRNGKey(0), D)
  cond = audit.Conditioning(num_classes=2, null_label=module.null_label, guidance=2.0)
  m = audit.from_linen(module, variables, data_shape=(D,), cond=cond)
  cfg = _small_cfg()
  cfg.sharpness.noise_to_signal = (configs.SD_FIRST_STEP_NOISE_TO_SIGNAL,)
  train = jax.random.normal(jax.random.PRNGKey(1), (20, D))
  rep = audit.run(m, train, jax.random.PRNGKey(2), cfg, progress=False)
  np.testing.assert_array_equal(rep.generation.labels, [0, 1, 0, 1, 0, 1])
  assert rep.guidance is not None and np.isfinite(rep.guidance.wen[rep.generation.ok]).all()
  assert {"wen_eps", "hs_detector"} <= set(rep.detectors)
  # Per prompt (class label): 3 generations of each of 2 prompts, averaged, ranked over prompts.
  pp = rep.summary["detection_per_prompt"]
  assert "note" in pp or all(r["num_positive"] + r["num_negative"] == 2 for r in pp.values())
  page = report.render(rep, cfg)
  assert "Wen et al." in page
  # The guided sample of label 1 is the ODE of u(∅) + w (u(1) − u(∅)) from the same noise.
  x0 = jnp.asarray(rep.generation.noise[1:2])
  u = lambda x, t: m.velocity((m.params, jnp.asarray(1)), x, jnp.full((1,), t, x.dtype))
  from memjax import sampling

  want = sampling.generate(
    lambda p, x, t: u(x, t[0]), None, x0, rtol=1e-4, atol=1e-4, max_steps=4096
  ).x
  np.testing.assert_allclose(rep.generation.samples[1:2], want, rtol=1e-5, atol=1e-6)


_SHARDED = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax, jax.numpy as jnp, numpy as np
from memjax import audit
from memjax.audit import configs, report
assert jax.device_count() == 2
m = audit.from_function(lambda p, x, t: jnp.tanh(x @ p) * (1.0 + t[:, None]), 0.5 * jnp.eye(3),
                        data_shape=(3,))
cfg = configs.get_config("smoke")
cfg.sample.num_samples = 7  # uneven over the devices
cfg.lid.update(num_t0=3, lpca_k=5)
cfg.regimes.num_sigmas = 4
cfg.weight_space.enabled = False
train = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (10, 3)))
reps = [audit.run(m, train, jax.random.PRNGKey(1), cfg, held_out=train[:5] + 0.1, mesh=mesh,
                  progress=False) for mesh in ("auto", None)]
assert reps[0].summary["devices"] == 2 and reps[1].summary["devices"] == 1
a, b = (report.sample_columns(r) for r in reps)
for col in b:
  if b[col].dtype.kind == "f":
    np.testing.assert_allclose(a[col], b[col], rtol=1e-5, atol=1e-7, err_msg=col)
  else:
    np.testing.assert_array_equal(a[col], b[col], err_msg=col)
print("sharded ok")
"""


@pytest.mark.slow
def test_sharded_audit_equals_single_device():
  import subprocess
  import sys

  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "-c", _SHARDED], capture_output=True, text=True, env=env, timeout=600
  )
  assert out.returncode == 0 and "sharded ok" in out.stdout, out.stderr[-3000:]


@pytest.mark.slow
def test_audit_of_a_2d_mlp_checkpoint_from_experiments_laplace_toy_2d(tmp_path):
  from smoke import run_smoke

  ckpt = str(tmp_path / "ckpt")
  run_smoke("laplace.toy_2d", tmp_path / "train", overrides={"train.checkpoint_dir": ckpt})
  cfg = configs.get_config("toy")
  cfg.update(experiment="laplace.toy_2d", checkpoint=ckpt, progress=False)
  cfg.experiment_config = "experiments/laplace/configs/toy_2d.py:smoke"
  cfg.sample.num_samples = 16
  here = os.getcwd()
  os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
  try:
    summary = cli.audit(cfg, str(tmp_path / "audit"))
  finally:
    os.chdir(here)
  assert summary["num_scored"] == 16 and os.path.exists(summary["files"]["html"])
  cfg.experiment_config = ""  # toy_2d's checkpoints store no config: it must be given
  with pytest.raises(ValueError, match="stores no config"):
    cli.audit(cfg, str(tmp_path / "audit2"))
