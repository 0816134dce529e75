"""The bus between the ingest edge and the pipelines, both of its ends: the contract, the memory
bus, Kafka (producer, consumer, topics, client) and the factory that composes bus stages."""
