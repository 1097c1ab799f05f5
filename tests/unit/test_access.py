"""Roles and ownership, credentials, the gateway's token bucket, the wallet's own actor check."""

from __future__ import annotations

import time

import jwt
import pytest

from connectors.auth import Authenticator, AuthError, hash_api_key, issue_token
from connectors.config import AuthConfig
from domain import wallet
from domain.access import ADMIN, OPERATOR, USER, Action, Decision, Principal, decide
from domain.money import Money
from services.gateway import RateLimiter

ALICE, BOB = "a1ice", "b0b"
CONFIG = AuthConfig(
    issuer="tests",
    audience="payments-api",
    signing_kid="new",
    jwt_keys={"old": "o" * 40, "new": "n" * 40},
    api_keys={hash_api_key("pk_secret"): "ops-bot:operator"},
    token_ttl_s=60,
)


def who(subject: str, *roles: str) -> Principal:
    return Principal(subject, frozenset(roles))


@pytest.mark.parametrize(
    ("principal", "action", "owner", "expected"),
    [
        (who(ALICE, USER), Action.READ_WALLET, ALICE, Decision.ALLOW),
        (who(ALICE, USER), Action.READ_WALLET, BOB, Decision.HIDDEN),
        (who(ALICE, USER), Action.READ_WALLET, None, Decision.HIDDEN),
        (who(ALICE, USER), Action.CREATE_PAYMENT, ALICE, Decision.ALLOW),
        (who(ALICE, USER), Action.CREATE_PAYMENT, BOB, Decision.HIDDEN),
        (who(ALICE, USER), Action.CREATE_MOVEMENT, ALICE, Decision.FORBIDDEN),
        (who(ALICE, USER), Action.REFUND_PAYMENT, ALICE, Decision.FORBIDDEN),
        (who("ops", OPERATOR), Action.CREATE_MOVEMENT, BOB, Decision.ALLOW),
        (who("ops", OPERATOR), Action.READ_PAYMENT, BOB, Decision.ALLOW),
        (who("ops", OPERATOR), Action.CREATE_PAYMENT, BOB, Decision.FORBIDDEN),
        (who("root", ADMIN), Action.CREATE_PAYMENT, BOB, Decision.ALLOW),
        (who("root", ADMIN), Action.REVERT_MOVEMENT, BOB, Decision.ALLOW),
    ],
)
def test_decisions(principal: Principal, action: Action, owner: str | None, expected: Decision) -> None:
    assert decide(principal, action, owner) is expected


def test_tokens_verify_with_any_active_key_and_carry_subject_and_roles() -> None:
    auth = Authenticator(CONFIG)
    principal, credential = auth.authenticate(f"Bearer {issue_token(CONFIG, ALICE, ['user'])}", None)
    assert principal == who(ALICE, USER) and credential == f"sub:{ALICE}"
    now = int(time.time())
    claims = {"sub": BOB, "roles": ["admin"], "iss": "tests", "aud": "payments-api", "iat": now, "exp": now + 60}
    old = jwt.encode(claims, "o" * 40, headers={"kid": "old"})
    assert auth.authenticate(f"Bearer {old}", None)[0] == who(BOB, ADMIN)
    assert auth.authenticate(None, "pk_secret")[0] == who("ops-bot", OPERATOR)


@pytest.mark.parametrize(
    "credential",
    [
        (None, None),
        ("Basic abc", None),
        ("Bearer x.y.z", None),
        (None, "pk_guess"),
        # Header bytes outside ASCII reach the service as surrogate escapes; hashing or
        # decoding them raised UnicodeEncodeError (a 500) before.
        ("Bearer \udcff\udcfe.a.b", None),
        (None, "pk_\udcff"),
        (None, "pk_é"),
        ("Bearer a.b.c\x00", None),
    ],
)
def test_bad_credentials_are_refused(credential: tuple[str | None, str | None]) -> None:
    with pytest.raises(AuthError):
        Authenticator(CONFIG).authenticate(*credential)


def test_retired_keys_forged_algorithms_and_expired_tokens_are_refused() -> None:
    now = int(time.time())
    claims = {"sub": BOB, "roles": ["admin"], "iss": "tests", "aud": "payments-api", "iat": now, "exp": now + 60}
    bad = [
        jwt.encode(claims, "r" * 40, headers={"kid": "retired"}),
        jwt.encode(claims, "x" * 40, headers={"kid": "new"}),
        jwt.encode(claims, None, algorithm="none", headers={"kid": "new"}),
        jwt.encode({**claims, "exp": now - 3600}, "n" * 40, headers={"kid": "new"}),
        jwt.encode({**claims, "iss": "elsewhere"}, "n" * 40, headers={"kid": "new"}),
        jwt.encode({**claims, "roles": []}, "n" * 40, headers={"kid": "new"}),
    ]
    for token in bad:
        with pytest.raises(AuthError):
            Authenticator(CONFIG).verify(token)


def test_the_bucket_allows_a_burst_then_the_rate_and_says_when() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 0.0) == pytest.approx(0.5)
    assert limiter.take("b", 0.0) == 0.0  # per credential
    assert limiter.take("a", 0.5) == 0.0


def test_the_wallet_refuses_a_debit_whose_actor_does_not_own_it() -> None:
    owned = wallet.Wallet("w1", ALICE, "USD", 1000, 1)

    def command(actor: Principal | None, payment_id: str | None = "p1") -> wallet.RequireMovement:
        return wallet.RequireMovement(
            "c1", "m1", "w1", "expense", Money(10, "USD"), "p1", payment_id=payment_id, actor=actor
        )

    def outcome(cmd: wallet.RequireMovement) -> tuple[str, str | None]:
        event = wallet.decide_movement(owned, lambda _: None, cmd, 0).events[0]
        assert isinstance(event, wallet.MovementUpdated)
        return event.status, event.reason_code

    assert outcome(command(who(BOB, USER))) == ("rejected", "actor_not_allowed")
    assert outcome(command(who(ALICE, USER), payment_id=None)) == ("rejected", "actor_not_allowed")
    assert outcome(command(who(ALICE, USER)))[0] == "applied"
    assert outcome(command(who("ops", OPERATOR)))[0] == "applied"
    assert outcome(command(None)) == ("rejected", "actor_missing")  # every command names its actor


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    import jwt

    from connectors import auth
    from connectors.config import load_config

    auth_config = load_config("test").auth
    authenticator = auth.Authenticator(auth_config)
    token = auth.issue_token(auth_config, "cached-user", ["user"], ttl_s=600)
    decoded = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    assert authenticator.verify(token)[0].subject == "cached-user"
    assert authenticator.verify(token)[0].subject == "cached-user"
    assert len(decoded) == 1  # the second request did not check the signature again
    remembered = authenticator.verified.get(token)
    assert remembered is not None
    expires = remembered[2]
    monkeypatch.setattr(auth.time, "time", lambda: expires + auth.LEEWAY_S + 1)
    with pytest.raises(AuthError, match="expired"):
        authenticator.verify(token)
    assert len(decoded) == 2  # past its expiry the cache no longer vouches for it
