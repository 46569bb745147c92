"""Shared runner for experiment smoke tests: ``run_smoke(name, tmp_path)`` runs ``:smoke`` end to end."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_smoke(name: str, workdir, variant: str = "smoke", extra=(), timeout: int = 900) -> dict:
  """Run ``python -m experiments.NAME --config=...:VARIANT`` into ``workdir``; return results.json.

  Asserts a zero exit status and at least one non-trivial PNG figure.
  """
  cmd = [sys.executable, "-m", f"experiments.{name}", f"--config=experiments/configs/{name}.py:{variant}",
         f"--config.workdir={workdir}", *extra]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  pngs = [p for p in os.listdir(workdir) if p.endswith(".png")]
  assert pngs and all(os.path.getsize(os.path.join(workdir, p)) > 10_000 for p in pngs), pngs
  return results
