"""Streaming ingestion: the project's Kafka topics, the broker settings and a local Tansu broker for dev and tests."""
