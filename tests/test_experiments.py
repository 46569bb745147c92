"""Every experiment's :smoke config runs end to end (training, analysis, figure, results.json)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMOKE = [
    ("fm_toy", ["two_point", "gmm2d"]),
]


@pytest.mark.parametrize("name,keys", SMOKE, ids=[s[0] for s in SMOKE])
def test_experiment_smoke(name, keys, tmp_path):
  cmd = [sys.executable, "-m", f"experiments.{name}", f"--config=experiments/configs/{name}.py:smoke",
         f"--config.workdir={tmp_path}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  for k in keys:
    assert k in results
  pngs = [p for p in os.listdir(tmp_path) if p.endswith(".png")]
  assert pngs and all(os.path.getsize(tmp_path / p) > 10_000 for p in pngs)
