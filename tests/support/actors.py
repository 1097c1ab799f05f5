"""Actors for commands a test writes straight to a topic: every command names one, and only
an operator or admin may create money (domain.money_sources)."""

from __future__ import annotations

from domain.access import OPERATOR, USER, Principal

TEST_OPERATOR = Principal("test-operator", frozenset({OPERATOR}))


def payer(user_id: str) -> Principal:
    """A user acting on their own wallet, as the payment API stamps a payment it creates."""
    return Principal(user_id, frozenset({USER}))
