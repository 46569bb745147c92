"""Generate one API reference page per memjax module from the module's public names.

The public names of ``memjax.<mod>`` are its ``__all__`` when the module defines one, otherwise
every top-level ``def``, ``class`` and assignment in its source whose name does not start with an
underscore. Pages are written to ``docs/api/generated/<mod>.rst`` (not tracked by git) when the
build starts, so a new public function appears in the reference without editing the docs.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import os

from sphinx.util import logging

logger = logging.getLogger(__name__)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "api", "generated")


def _foreign_alias(module, name: str) -> bool:
  """``name = jax.Array``-style shorthands for another library's object are not memjax API."""
  obj = getattr(module, name, None)
  owner = getattr(obj, "__module__", None) or ""
  return (inspect.isclass(obj) or callable(obj)) and not owner.startswith("memjax")


def public_names(modname: str) -> list[str]:
  """The documented names of module ``modname``, in source order (or ``__all__`` order).

  Without ``__all__``: every top-level ``def``/``class``/assignment whose name has no leading
  underscore, except shorthands for another library's object (``Array = jax.Array``).
  """
  module = importlib.import_module(modname)
  if hasattr(module, "__all__"):
    return list(module.__all__)
  with open(inspect.getsourcefile(module), encoding="utf-8") as f:
    tree = ast.parse(f.read())
  names = []
  for node in tree.body:
    if isinstance(node, ast.FunctionDef | ast.ClassDef):
      found = [node.name]
    elif isinstance(node, ast.Assign):
      found = [t.id for t in node.targets if isinstance(t, ast.Name)]
      if isinstance(node.value, ast.Attribute | ast.Name):
        found = [n for n in found if not _foreign_alias(module, n)]
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
      found = [node.target.id]
    else:
      found = []
    names += [n for n in found if not n.startswith("_") and n not in names]
  return names


def _alias_target(modname: str, name: str) -> str | None:
  """``memjax.paths.BatchField`` for ``BatchField = paths.BatchField`` in another module."""
  module = importlib.import_module(modname)
  with open(inspect.getsourcefile(module), encoding="utf-8") as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    if (
      isinstance(node, ast.Assign)
      and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
      and isinstance(node.value, ast.Attribute)
      and isinstance(node.value.value, ast.Name)
    ):
      owner = getattr(module, node.value.value.id, None)
      if inspect.ismodule(owner) and owner.__name__.startswith("memjax."):
        return f"{owner.__name__}.{node.value.attr}"
  return None


def _submodules(package) -> list[str]:
  """``memjax.__all__`` entries that are sub-packages contribute their own ``__all__`` modules."""
  out = []
  for name in package.__all__:
    mod = importlib.import_module(f"{package.__name__}.{name}")
    out.append(mod.__name__)
    if hasattr(mod, "__path__") and hasattr(mod, "__all__"):
      for sub in mod.__all__:
        full = f"{mod.__name__}.{sub}"
        try:
          sub_mod = importlib.import_module(full)
        except ImportError:
          continue
        if inspect.ismodule(sub_mod) and sub_mod.__name__ == full:
          out.append(full)
  return out


def _short_value(obj) -> str | None:
  text = repr(obj)
  if len(text) > 90 or " at 0x" in text or "\n" in text:
    return None
  return text


def _entry(modname: str, name: str, obj, comments: dict) -> str:
  full = f"{modname}.{name}"
  alias = _alias_target(modname, name)
  if alias is not None:
    return f".. py:data:: {name}\n\n   Alias of :py:obj:`{alias}`.\n"
  own = getattr(obj, "__module__", None) == modname and getattr(obj, "__name__", None) == name
  if inspect.ismodule(obj):  # a sub-module has its own page (see _submodules)
    return ""
  if inspect.isclass(obj) and own:
    if issubclass(obj, tuple) and hasattr(obj, "_fields"):
      return f".. autoclass:: {full}\n   :no-members:\n"
    fields = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
    exclude = f"   :exclude-members: {', '.join(fields)}\n" if fields else ""
    return f".. autoclass:: {full}\n   :members:\n{exclude}"
  if callable(obj) and own and not inspect.isclass(obj):
    return f".. autofunction:: {full}\n"
  # Data, type aliases and re-exported objects.
  lines = [f".. py:data:: {name}"]
  routine = inspect.isclass(obj) or inspect.isroutine(obj)
  value = None if routine else _short_value(obj)
  if value is not None:
    lines.append(f"   :value: {value}")
  lines.append("")
  doc = comments.get(("", name))
  if doc:
    lines += ["   " + line for line in doc]
  elif routine:
    target = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
    role = "class" if inspect.isclass(obj) else "func"
    if target.startswith("memjax."):
      lines.append(f"   Alias of :{role}:`{target}`.")
    else:
      lines.append(f"   Alias of ``{target}``.")
  return "\n".join(lines) + "\n"


def _summary(obj, name: str, comments: dict) -> str:
  """The first paragraph of ``obj``'s docstring (or of its ``#:`` comment), on one line."""
  own = inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)
  doc = inspect.getdoc(obj) if own else "\n".join(comments.get(("", name), []))
  para = []
  for line in (doc or "").strip().splitlines():
    if not line.strip():
      break
    para.append(line.strip())
  return " ".join(para) or "–"


def module_page(modname: str) -> str:
  """reStructuredText of the reference page of ``modname``."""
  from sphinx.pycode import ModuleAnalyzer

  module = importlib.import_module(modname)
  try:
    comments = ModuleAnalyzer.for_module(modname).find_attr_docs()
  except Exception:  # a module without source (compiled): no ``#:`` comments
    comments = {}
  names = public_names(modname)
  title = f"``{modname}``"
  out = [title, "=" * len(title), "", f".. automodule:: {modname}", "   :no-members:", ""]
  present = [n for n in names if hasattr(module, n)]
  if present:
    out += [".. rubric:: Summary", "", ".. list-table::", "   :widths: 30 70", ""]
    for n in present:
      obj = getattr(module, n)
      role = "py:mod" if inspect.ismodule(obj) else "py:obj"
      target = obj.__name__ if inspect.ismodule(obj) else f"{modname}.{n}"
      out += [f"   * - :{role}:`~{target}`", f"     - {_summary(obj, n, comments)}"]
    out += ["", ".. rubric:: Reference", ""]
  for n in names:
    if not hasattr(module, n):  # e.g. a name in the source that is deleted again at import
      logger.warning("%s lists %r, which the imported module does not have", modname, n)
      continue
    out += [_entry(modname, n, getattr(module, n), comments), ""]
  return "\n".join(out)


def write_pages(package: str = "memjax") -> list[str]:
  """Write every module page; return the module names (a stale page is removed)."""
  os.makedirs(OUT, exist_ok=True)
  mods = _submodules(importlib.import_module(package))
  wanted = {f"{m}.rst" for m in mods}
  for f in os.listdir(OUT):
    if f.endswith(".rst") and f not in wanted:
      os.remove(os.path.join(OUT, f))
  for m in mods:
    text = module_page(m)
    path = os.path.join(OUT, f"{m}.rst")
    old = None
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        old = f.read()
    if old != text:  # unchanged pages keep their mtime, so incremental builds stay incremental
      with open(path, "w", encoding="utf-8") as f:
        f.write(text)
  return mods


def _on_builder_inited(app):
  write_pages()


def setup(app):
  app.connect("builder-inited", _on_builder_inited)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
