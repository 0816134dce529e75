"""Kafka as the bus: the producer the gateway publishes with, the consumer the pipelines read
with, topic administration and the one producer factory both Kafka writers use."""
