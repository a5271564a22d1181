"""Thin wiring from Kafka streams to the pure domain logic."""
