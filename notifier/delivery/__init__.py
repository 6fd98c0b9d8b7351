"""Alert delivery: routes, receivers, silences and escalation (the pure rules; no I/O)."""
