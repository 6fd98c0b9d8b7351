"""The Kafka runtime: the Faust app, its batch consumer, changelog tables, leader jobs."""
