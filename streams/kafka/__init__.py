"""Kafka adapters: topics, envelopes and records, the partitioner, the ledger, the rules feed."""
