"""Dev tooling: the embedded stack, the Apache Kafka runner, the generator, stack probes."""
