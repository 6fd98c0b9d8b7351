"""Benchmarks of the worker, sink, notifier and detection; figures in bench/README.md."""
