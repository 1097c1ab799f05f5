"""Development tooling: local Kafka and PostgreSQL, devctl, sample data, the event catalog, the benchmark.

Never installed in production; nothing under domain/, streams/, connectors/ or services/ imports it.
"""
