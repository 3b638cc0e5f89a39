"""statekit's REST + WebSocket API (FastAPI): ``statekit serve``, docs/api.md.

Needs the ``api`` extra (``pip install statekit[api]``).

- :func:`create_app` builds the app over an open store (it does not close it);
- :func:`serve` opens the configured store, serves the app with uvicorn until
  cancelled or signalled, and closes the store.
"""

from statekit.api.app import create_app
from statekit.api.server import check_bind, is_loopback, serve

__all__ = ["check_bind", "create_app", "is_loopback", "serve"]
