"""statekit-file: statekit's versioned keys in a folder of plain files (``file:///dir``).

Install ``statekit-file`` and open a store with ``await statekit.open("file:///var/lib/desk1")``.
See docs/backends/file.md.
"""

from statekit_file.backend import FileBackend
from statekit_file.names import KeyNames

__all__ = ["FileBackend", "KeyNames"]

__version__ = "0.1.0"
