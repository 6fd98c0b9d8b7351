"""The Avro schemas of the topics' records, and their codecs (JSON, Avro, a registry)."""
