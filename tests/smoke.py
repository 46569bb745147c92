"""Shared in-process runner for experiment smoke tests.

``run_smoke("laplace.two_point_1d", tmp_path)`` imports ``experiments.laplace.two_point_1d``,
builds ``experiments/laplace/configs/two_point_1d.py:get_config("smoke")`` and calls the
module's ``run(cfg, workdir)``; it checks ``results.json`` was written and equals the returned
dict, and that at least one non-trivial PNG figure exists.
"""

import importlib
import json
import os

import numpy as np


def load_config(name: str, variant: str = "smoke"):
  """``get_config(variant)`` of ``experiments/<group>/configs/<exp>.py`` for ``name =
  "group.exp"``.
  """
  group, _, exp = name.rpartition(".")
  pkg = f"experiments.{group}.configs.{exp}" if group else f"experiments.configs.{exp}"
  return importlib.import_module(pkg).get_config(variant)


def run_smoke(name: str, workdir, variant: str = "smoke", overrides: dict | None = None) -> dict:
  """Run experiment ``name`` (e.g. ``"lid.manifolds"``) on its ``variant`` config into
  ``workdir``.
  """
  cfg = load_config(name, variant)
  for key, value in (overrides or {}).items():
    node = cfg
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    node[leaf] = value
  module = importlib.import_module(f"experiments.{name}")
  results = module.run(cfg, str(workdir))
  with open(os.path.join(workdir, "results.json")) as f:
    written = json.load(f)
  assert set(written) == set(results), (sorted(written), sorted(results))
  pngs = [p for p in os.listdir(workdir) if p.endswith(".png")]
  assert pngs and all(os.path.getsize(os.path.join(workdir, p)) > 10_000 for p in pngs), pngs
  return written


def check_geodesic_geometry(res, drift_tol=5e-3):
  """Properties every Laplace sweep must satisfy, whatever the numbers: the Euclidean sample
  moves exactly ||v|| (θ_E = θ* + v); from a stationary θ* (the tilt) a geodesic of G = I +
  ∇L̃∇L̃ᵀ has constant speed ||v|| in G, so ||θ_R − θ*|| ≤ ||v||; and its energy is conserved
  (speed drift at the solver's tolerance). A wrong metric, sign or time span breaks them."""
  for row in res["sweep"]:
    s, v = row["sampling"], row["tangent_norm"]["mean"]
    np.testing.assert_allclose(s["euclidean"]["displacement"]["mean"], v, rtol=1e-4)
    if s["riemannian"]["successful"]:
      assert s["riemannian"]["displacement"]["mean"] <= v * (1 + 1e-3), row["eta"]
      assert s["riemannian"]["speed_drift_max"] < drift_tol, row["eta"]
