"""Entry points (aiohttp services, projector, tools) and the one place things are wired."""
