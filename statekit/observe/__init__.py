"""What operations watch statekit by: Prometheus metrics, JSON logs, OpenTelemetry spans.

Each is optional and costs nothing when off:

- :mod:`statekit.observe.store` times a store's operations into a
  :class:`prometheus_client.CollectorRegistry` (the API does it for its store, into the
  app's own registry, which ``GET /metrics`` serves); an uninstrumented store runs its
  plain methods.
- :mod:`statekit.observe.collectors` reads, at scrape time, the figures statekit keeps
  anyway (caches, mirrors, WebSocket hub, locks): nothing is added to their paths.
- :mod:`statekit.observe.logs` formats log records as JSON lines with the request id.
- :mod:`statekit.observe.tracing` opens spans around store operations and exchange
  calls when ``opentelemetry-api`` is installed (the ``otel`` extra), else nothing.

docs/operations.md lists every series, the log fields and the alert rules.
"""
