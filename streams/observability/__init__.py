"""Health endpoints, Prometheus metrics, structured logs, optional error reporting."""
