"""Entry points: the ``upstream`` CLI and the wiring of the worker, sink and notifier."""
