"""Every named variant of every experiment config builds (a variant is only run by hand, so a
type clash in its overrides would otherwise surface hours into a session)."""

import importlib
import pkgutil
import re

import pytest

import experiments


def _config_modules():
  names = ["memjax.audit.configs", "experiments.laplace.quality"]
  for info in pkgutil.walk_packages(experiments.__path__, "experiments."):
    if ".configs." in info.name and not info.ispkg:
      names.append(info.name)
  return sorted(names)


def _variants(module):
  """The variants a module accepts, read from its refusal of an unknown one."""
  with pytest.raises(ValueError, match="unknown config variant") as err:
    module.get_config("no-such-variant")
  return re.findall(r"'([^']*)'", str(err.value).split("; use ", 1)[1])


@pytest.mark.parametrize("name", _config_modules())
def test_every_variant_builds(name):
  module = importlib.import_module(name)
  variants = _variants(module)
  assert variants, name
  for v in variants:
    cfg = module.get_config(v)
    assert cfg.to_dict(), (name, v)
