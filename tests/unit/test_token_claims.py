"""JWT claims typed and bounded: a right signature over absurd claims is still refused."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from connectors.auth import LEEWAY_S, Authenticator, AuthError, check_claims
from connectors.config import AuthConfig

NOW = 1_800_000_000
DAY = 86_400
GOOD = {"sub": "alice", "iss": "tests", "aud": "payments-api", "iat": NOW, "exp": NOW + 600}
CONFIG = AuthConfig("tests", "payments-api", "k", {"k": "k" * 40}, {}, 600)


def test_sane_claims_give_their_expiry() -> None:
    assert check_claims(GOOD, NOW, DAY) == NOW + 600
    assert check_claims({**GOOD, "exp": float(NOW + 600), "nbf": NOW}, NOW, DAY) == NOW + 600
    assert check_claims({**GOOD, "iat": NOW + LEEWAY_S}, NOW, DAY) == NOW + 600  # clock skew


@pytest.mark.parametrize(
    "changed",
    [
        {"exp": str(NOW + 600)},
        {"exp": 1e20},
        {"exp": 10**20},
        {"exp": NOW + 600.5},
        {"exp": True},
        {"exp": None},
        {"iat": str(NOW)},
        {"iat": NOW + 0.25},
        {"iat": None},
        {"iat": NOW + LEEWAY_S + 1},  # issued in the future
        {"nbf": str(NOW)},
        {"nbf": NOW + LEEWAY_S + 1},
        {"exp": NOW - LEEWAY_S},  # expired
        {"exp": NOW + DAY + LEEWAY_S + 1},  # lives longer than a day from now
        {"iat": NOW - 2 * DAY, "exp": NOW + 60},  # and from when it was issued
        {"iat": NOW, "exp": NOW},
        {"sub": 7},
        {"sub": ""},
        {"sub": "x" * 201},
        {"aud": ["payments-api"]},
        {"iss": None},
    ],
)
def test_claims_of_the_wrong_type_or_out_of_bounds_are_refused(changed: dict[str, Any]) -> None:
    with pytest.raises(AuthError):
        check_claims({**GOOD, **changed}, NOW, DAY)


@pytest.mark.parametrize("exp", ["{now}", 1e20])
def test_a_rightly_signed_token_with_a_bad_exp_is_refused_and_never_remembered(exp: Any) -> None:
    now = int(time.time())
    claims = {**GOOD, "roles": ["user"], "iat": now, "exp": exp.format(now=now + 60) if isinstance(exp, str) else exp}
    token = jwt.encode(claims, "k" * 40, headers={"kid": "k"})
    authenticator = Authenticator(CONFIG)
    for _ in range(2):
        with pytest.raises(AuthError):
            authenticator.verify(token)
    assert token not in authenticator.verified
