"""The API's routes, one ``APIRouter`` per resource (docs/api.md lists them).

Each router is a module-level object; what its routes need (the store, the redactor,
the hub...) comes by dependency (:mod:`statekit.api.dependencies`), and
:func:`statekit.api.create_app` includes them (and puts every HTTP route but
``/health`` behind the API key; ``/ws`` asks for the key itself).

- :mod:`.health`: ``GET /health``, the one route without the API key;
- :mod:`.states`: ``/states``, a state's history and its conditional writes;
- :mod:`.snapshots`: ``/snapshots``, restore and diff;
- :mod:`.trading`: ``/positions``, ``/orders``, ``/balances``;
- :mod:`.reconcile`: ``/reconcile/metrics``, ``/reconcile/intents``;
- :mod:`.metrics`: ``GET /metrics`` for Prometheus;
- :mod:`.stats`: ``/stats/locks``, ``/stats/cache``, ``/stats/ws``;
- :mod:`.ws`: ``WS /ws``, the live change feed.
"""
