"""``python -m memjax.audit``: the ``memjax-audit`` command."""

from memjax.audit.cli import main

if __name__ == "__main__":
  main()
