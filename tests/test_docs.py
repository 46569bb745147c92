"""Documentation checks: README and guide code blocks run as written, and every public name of
every module in ``memjax.__all__`` has an entry in the built API reference.

Convention for code blocks (README.md and docs/**/*.md): every ```` ```python ```` block runs, in
order, in ONE fresh Python process per file (so later blocks see the names earlier blocks
defined), in an empty working directory, with JAX's defaults (float32, no strict rank promotion)
as a user has them. A block that must not run (a sketch with placeholders, a multi-host command)
is preceded by the line ``<!-- skip -->``; use it sparingly.
"""

import importlib
import inspect
import json
import os
import pathlib
import re
import subprocess
import sys
import zlib

import pytest

import memjax

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD = DOCS / "_build" / "html"
SKIP = "<!-- skip -->"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
  """``(line, code, skipped)`` for every ```` ```python ```` block of a Markdown text."""
  out = []
  for m in _FENCE.finditer(text):
    before = text[: m.start()].rstrip().splitlines()
    skipped = bool(before) and before[-1].strip() == SKIP
    out.append((text.count("\n", 0, m.start(1)) + 1, m.group(1), skipped))
  return out


def _markdown_files() -> list[pathlib.Path]:
  files = [ROOT / "README.md"]
  for path in sorted(DOCS.rglob("*.md")):
    rel = path.relative_to(DOCS).parts
    if rel[0] not in ("_build", "notebooks"):
      files.append(path)
  return files


def test_python_blocks_extractor():
  text = (
    "intro\n```python\na = 1\n```\n\n<!-- skip -->\n```python\nraise SystemExit\n```\n"
    "```bash\nls\n```\n```python\nb = a + 1\n```\n"
  )
  blocks = python_blocks(text)
  assert [(line, code, skip) for line, code, skip in blocks] == [
    (3, "a = 1\n", False),
    (8, "raise SystemExit\n", True),
    (14, "b = a + 1\n", False),
  ]


_RUNNER = r"""
import json, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for path, line, code in blocks:
  try:
    exec(compile("\n" * (line - 1) + code, path, "exec"), namespace)
  except BaseException:
    traceback.print_exc()
    print(f"FAILED: the block at {path}:{line}", file=sys.stderr)
    sys.exit(1)
"""


def _runnable(path: pathlib.Path) -> list[tuple[str, int, str]]:
  return [
    (str(path), line, code) for line, code, skip in python_blocks(path.read_text()) if not skip
  ]


_WITH_CODE = [p for p in _markdown_files() if _runnable(p)]


def test_readme_and_guide_have_runnable_blocks():
  names = {str(p.relative_to(ROOT)) for p in _WITH_CODE}
  assert {"README.md", "docs/guide/laplace.md", "docs/guide/lid.md"} <= names, names


@pytest.mark.parametrize("path", _WITH_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_python_blocks_run_as_written(path, tmp_path):
  blocks = _runnable(path)
  env = dict(os.environ)
  env.update(
    JAX_PLATFORMS="cpu",
    MPLBACKEND="Agg",
    PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    JAX_COMPILATION_CACHE_DIR=env.get("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache")),
  )
  # The user's JAX defaults, not the test suite's float64 / strict rank promotion.
  for name in ("JAX_ENABLE_X64", "JAX_NUMPY_RANK_PROMOTION", "XLA_FLAGS"):
    env.pop(name, None)
  proc = subprocess.run(
    [sys.executable, "-c", _RUNNER],
    input=json.dumps(blocks),
    capture_output=True,
    text=True,
    cwd=tmp_path,
    env=env,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-6000:]


# ---------------------------------------------------------------------------
# API reference coverage.


def _module_names() -> list[str]:
  out = []
  for name in memjax.__all__:
    mod = importlib.import_module(f"memjax.{name}")
    out.append(mod.__name__)
    if hasattr(mod, "__path__") and hasattr(mod, "__all__"):  # a sub-package: its modules too
      out += [
        f"{mod.__name__}.{s}"
        for s in mod.__all__
        if inspect.ismodule(getattr(mod, s, None)) and getattr(mod, s).__name__.endswith(f".{s}")
      ]
  return out


def _public(modname: str) -> list[str]:
  """``__all__`` when the module has one; otherwise every function and class DEFINED in it."""
  mod = importlib.import_module(modname)
  if hasattr(mod, "__all__"):
    return list(mod.__all__)
  return [
    n
    for n, obj in vars(mod).items()
    if not n.startswith("_")
    and (inspect.isfunction(obj) or inspect.isclass(obj))
    and obj.__module__ == modname
  ]


def _read_inventory(path: pathlib.Path) -> set[str]:
  """Object names in a Sphinx ``objects.inv`` (format v2: four header lines, then zlib)."""
  raw = path.read_bytes()
  body = raw.split(b"\n", 4)[4]
  return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines() if line}


def _sources_newer_than(stamp: pathlib.Path) -> bool:
  t = stamp.stat().st_mtime
  watched = list((ROOT / "memjax").rglob("*.py")) + [
    p
    for p in DOCS.rglob("*")
    if p.is_file() and "_build" not in p.parts and "generated" not in p.parts
  ]
  return any(p.stat().st_mtime > t for p in watched)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
  """The built HTML site; built here (strictly) when absent or older than the sources."""
  inv = BUILD / "objects.inv"
  if inv.exists() and not _sources_newer_than(inv):
    return BUILD
  out = tmp_path_factory.mktemp("html")
  proc = subprocess.run(
    [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q"]
    + [str(DOCS), str(out)],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-6000:]
  return out


def test_every_public_name_has_an_api_entry(site):
  inventory = _read_inventory(site / "objects.inv")
  missing = [f"{m}.{n}" for m in _module_names() for n in _public(m) if f"{m}.{n}" not in inventory]
  assert not missing, missing
  assert {f"memjax.{m}" for m in memjax.__all__} <= inventory


def test_every_notebook_is_rendered(site):
  notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
  assert notebooks
  missing = [nb.name for nb in notebooks if not (site / "notebooks" / f"{nb.stem}.html").exists()]
  assert not missing, missing
