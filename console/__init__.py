"""The operator console (`payments`): trace, tail, dlq, rebuild, one module each."""
