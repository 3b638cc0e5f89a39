"""``python -m statekit.testing.paper_remote``: see :mod:`statekit.testing.paper_remote.command`."""

import sys

from statekit.testing.paper_remote.command import main

if __name__ == "__main__":
    sys.exit(main())
