"""``python -m statekit.bench``: see :mod:`statekit.bench.cli`."""

import sys

from statekit.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
