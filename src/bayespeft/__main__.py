"""``python -m bayespeft ARGS``: the ``bayespeft`` command (:func:`bayespeft.cli.main`), e.g. where the console script
is not on ``PATH``. Imports only the CLI, so ``python -m bayespeft --help`` starts as fast as ``bayespeft --help``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
