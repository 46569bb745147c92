"""Sphinx configuration of the memjax documentation site (``make docs``).

Sphinx + MyST-NB + sphinx-book-theme, as flax and optax use: autodoc and napoleon read the
Google-style docstrings, ``_ext/memjax_api.py`` generates the API reference (a summary table and
an autodoc entry per public name of each module), and MyST-NB renders the notebooks without
executing them (the tests execute them with nbmake). ``make docs`` builds with
``-W --keep-going -n``: any warning, including an unresolved ``memjax`` cross-reference, fails
the build.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "_ext"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import memjax  # noqa: E402

project = "memjax"
author = "the memjax authors"
copyright = "the memjax authors"  # noqa: A001
release = memjax.__version__
version = memjax.__version__

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "myst_nb",
  "memjax_api",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "notebooks/README*"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# Notebooks: rendered with their stored outputs, never executed at build time.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference (the pages are written by _ext/memjax_api.py from each module's public names).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
python_use_unqualified_type_names = True
add_module_names = False

# Strict cross-references for memjax's own objects; third-party targets (jax, numpy, flax, optax,
# diffrax, typing, ...) have no inventory offline (no intersphinx: the build needs no network).
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!memjax\b).*"), (r"py:.*", r"memjax\..*\.(Array|PRNGKey)")]

html_theme = "sphinx_book_theme"
html_title = f"memjax {release}"
html_theme_options = {
  "show_toc_level": 2,
  "navigation_with_keys": False,
  "use_download_button": True,
}
html_last_updated_fmt = None
