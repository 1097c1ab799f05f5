"""The fault suite: `make chaos`, or `python -m tests.chaos [scenario ...]`."""
