"""The bus between the ingest edge and the pipelines: Kafka in production, memory when embedded."""
