"""The streaming side of Upstream: domain core, stages, Kafka runtime, adapters, entry points."""
