"""Stand-ins for the outside world: the external payment provider."""
