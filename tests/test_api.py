"""The public API and the architecture rules: stated modules, no private names across modules,
estimators that do not import weight-space code, and key functions equal with and without jit."""

import ast
import json
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np

import memjax
from memjax import lid, linalg, memorisation, neighbours, paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = sorted(  # subpackages of memjax (a folder with an __init__.py)
  f
  for f in os.listdir(os.path.join(ROOT, "memjax"))
  if f[0] != "_" and os.path.isfile(os.path.join(ROOT, "memjax", f, "__init__.py"))
)
MODULES = sorted(
  [f[:-3] for f in os.listdir(os.path.join(ROOT, "memjax")) if f.endswith(".py") and f[0] != "_"]
  + PACKAGES
)


def test_all_lists_every_public_module():
  assert sorted(memjax.__all__) == MODULES
  for name in memjax.__all__:
    assert getattr(memjax, name).__name__ == f"memjax.{name}"


def _sources():
  """(path, text) of every .py file and notebook code cell outside memjax/ and tests/."""
  for top in ("experiments", "benchmarks", "notebooks"):
    for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
      for f in files:
        path = os.path.join(dirpath, f)
        if f.endswith(".py"):
          with open(path) as fh:
            yield path, fh.read()
        elif f.endswith(".ipynb"):
          with open(path) as fh:
            nb = json.load(fh)
          code = [c["source"] for c in nb["cells"] if c["cell_type"] == "code"]
          yield path, "\n".join("".join(s) if isinstance(s, list) else s for s in code)


def test_no_private_memjax_names_outside_their_module():
  mods = "|".join(MODULES)
  attr = re.compile(rf"\b(?:memjax\.)?(?:{mods})\._[A-Za-z]\w*")
  imported = re.compile(r"from\s+memjax(?:\.\w+)?\s+import\s+[^\n]*\b_[A-Za-z]|memjax\._")
  offenders = []
  for path, text in _sources():
    for m in list(attr.finditer(text)) + list(imported.finditer(text)):
      if not m.group(0).split(".")[-1].startswith("__"):
        offenders.append(f"{os.path.relpath(path, ROOT)}: {m.group(0)}")
  assert not offenders, offenders


def _module_files(module: str) -> list[str]:
  """The source files of a memjax module: ``memjax/<module>.py``, or every file of a subpackage."""
  if module in PACKAGES:
    folder = os.path.join(ROOT, "memjax", module)
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".py")]
  return [os.path.join(ROOT, "memjax", f"{module}.py")]


def _memjax_imports(module: str) -> set[str]:
  """Top-level memjax modules that ``module`` imports (its own subpackage excluded)."""
  out = set()
  for path in _module_files(module):
    with open(path) as fh:
      out |= _imports_of(ast.parse(fh.read()))
  return out - {module}


def _imports_of(tree) -> set[str]:
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module == "memjax":
      out |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("memjax."):
      out.add(node.module.split(".")[1])
    elif isinstance(node, ast.Import):
      out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("memjax.")}
  return out


def _closure(module: str) -> set[str]:
  seen, todo = set(), [module]
  while todo:
    for dep in _memjax_imports(todo.pop()):
      if dep not in seen:
        seen.add(dep)
        todo.append(dep)
  return seen


def test_x_space_estimators_do_not_depend_on_weight_space_code():
  for estimator in ("lid", "sharpness", "neighbours", "memorisation", "denoisers", "regimes"):
    deps = _closure(estimator)
    assert not deps & {"curvature", "training", "laplace"}, (estimator, deps)


def test_import_graph_has_no_cycles():
  for m in MODULES:
    assert m not in _closure(m), m


def test_audit_sits_on_top_of_every_other_module():
  assert "audit" in PACKAGES
  for m in MODULES:
    if m != "audit":
      assert "audit" not in _closure(m), m
  # The lenses reuse the estimators' homes (one home per concept).
  assert {"lid", "sharpness", "regimes", "memorisation", "laplace", "training"} <= _closure("audit")


def _experiments_imports(tree) -> list[str]:
  """Every way a module could import the repository's ``experiments`` package: import
  statements, ``importlib.import_module`` / ``__import__`` calls, module-path strings (e.g.
  ``"experiments.laplace.images:load"``, docstrings aside) and ``sys.path`` edits."""
  module_path = re.compile(r"^experiments(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")
  docstrings = {
    id(n.body[0].value)
    for n in ast.walk(tree)
    if isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
    and n.body
    and isinstance(n.body[0], ast.Expr)
    and isinstance(n.body[0].value, ast.Constant)
  }
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [a.name for a in node.names if a.name.split(".")[0] == "experiments"]
    elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "experiments":
      found.append(node.module)
    elif isinstance(node, ast.Call):
      name = ast.unparse(node.func)
      if name.endswith(("import_module", "__import__")) and node.args:
        arg = node.args[0]
        head = arg.values[0] if isinstance(arg, ast.JoinedStr) and arg.values else arg
        if isinstance(head, ast.Constant) and str(head.value).split(".")[0] == "experiments":
          found.append(f"{name}({ast.unparse(arg)})")
      if name in ("sys.path.insert", "sys.path.append"):
        found.append(ast.unparse(node))
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
      if id(node) not in docstrings and module_path.match(node.value.strip()):
        found.append(repr(node.value))
  return found


def test_the_package_never_imports_experiments():
  # The installed package never imports the repository's experiments folder, by any route.
  offenders = {}
  for name in MODULES:
    for path in _module_files(name):
      with open(path) as fh:
        hits = _experiments_imports(ast.parse(fh.read()))
      if hits:
        offenders[os.path.relpath(path, ROOT)] = hits
  assert not offenders, offenders
  # The check itself catches each route.
  for src in (
    "import experiments.laplace",
    "from experiments import common",
    "import importlib\nimportlib.import_module('experiments.laplace.images')",
    "__import__('experiments')",
    "import importlib\nimportlib.import_module(f'experiments.{name}')",
    "SPEC = 'experiments.laplace.images:load_images'",
    "import sys\nsys.path.insert(0, '.')",
  ):
    assert _experiments_imports(ast.parse(src)), src
  assert not _experiments_imports(ast.parse('"""Uses experiments.laplace.images."""\nx = 1'))


def test_audit_exports():
  for name in memjax.audit.__all__:
    assert hasattr(memjax.audit, name), name
  assert memjax.audit.run.__module__ == "memjax.audit.lenses"


def test_diffrax_internals_are_not_used():
  for dirpath, _, files in os.walk(ROOT):
    if ".venv" in dirpath or ".git" in dirpath:
      continue
    for f in files:
      if f.endswith(".py") and f != "test_api.py":
        with open(os.path.join(dirpath, f)) as fh:
          assert not re.search(r"RESULTS\._|\._value\b", fh.read()), f


class JitVariants(chex.TestCase):
  """Key public functions give the same numbers called eagerly and inside a caller's jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_hvp(self):
    a = jax.random.normal(jax.random.PRNGKey(0), (5, 5), jnp.float64)
    loss = lambda th: 0.5 * th @ (a @ a.T) @ th + jnp.sum(jnp.sin(th))
    th = jnp.linspace(-1.0, 1.0, 5)
    v = jnp.arange(5.0)
    g, hv = self.variant(lambda t, w: linalg.hvp(loss, t, w))(th, v)
    chex.assert_trees_all_close(g, jax.grad(loss)(th), rtol=1e-12)
    chex.assert_trees_all_close(hv, jax.hessian(loss)(th) @ v, rtol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  def test_flipd_exact_gaussian(self):
    # ε-field of N(0, diag(c)) under VP: ε̂(y) = σ y / (ψ² c + σ²)  (closed form, D = 3).
    sched = paths.vp_linear()
    c = jnp.asarray([1e-4, 1.0, 2.0])

    def eps(y, t):
      psi, sig = sched.psi(t)[:, None], sched.sigma(t)[:, None]
      return sig * y / (psi**2 * c[None, :] + sig**2)

    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3), jnp.float64)
    t0 = jnp.asarray(0.05)
    got = self.variant(lambda xx: lid.flipd(eps, xx, t0, sched, parameterisation="eps"))(x)
    psi, sig = sched.psi(t0), sched.sigma(t0)
    tr = jnp.sum(sig / (psi**2 * c + sig**2))
    want = 3 - sig * tr + jnp.sum((sig * psi * x / (psi**2 * c[None, :] + sig**2)) ** 2, axis=1)
    chex.assert_trees_all_close(got, want, rtol=1e-9)

  @chex.variants(with_jit=True, without_jit=True)
  def test_nn_ratio(self):
    train = jax.random.normal(jax.random.PRNGKey(2), (50, 6), jnp.float64)
    q = train[:7] + 0.01
    r = self.variant(lambda s: memorisation.nn_ratio(s, train, train_chunk=16))(q)
    d = np.linalg.norm(np.asarray(q)[:, None] - np.asarray(train)[None], axis=-1)
    d.sort(axis=1)
    chex.assert_trees_all_close(r, (d[:, 0] / d[:, 1]) ** 2, rtol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  def test_knn_exclude_self(self):
    x = jax.random.normal(jax.random.PRNGKey(3), (30, 4), jnp.float64)
    dist, idx = self.variant(lambda a: neighbours.knn(a, a, 3, exclude_self=True, ref_chunk=8))(x)
    d = np.linalg.norm(np.asarray(x)[:, None] - np.asarray(x)[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(np.asarray(idx), np.argsort(d, axis=1)[:, :3])
    chex.assert_trees_all_close(dist, np.sort(d, axis=1)[:, :3], rtol=1e-12)
