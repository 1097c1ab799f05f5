"""The pure domain core: aggregates as functions, standard library only, no I/O.

Every decision is `decide(state, command) -> outcome`; the adapters (faust agents,
REST handlers, projections) load state, call these functions, and persist or
publish what they return.
"""
