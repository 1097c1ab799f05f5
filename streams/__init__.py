"""Faust apps and agents: one saga step per agent, thin (decode, call the domain, produce)."""
