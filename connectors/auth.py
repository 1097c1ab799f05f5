"""Credentials: JWTs signed with a rotating key set, and API keys kept only as hashes.

A JWT names its key by `kid`; every key in `auth.jwt_keys` verifies, the one named by
`auth.signing_kid` signs, so a new key is added, made the signing key, and the old one
removed once the tokens it signed have expired. API keys are compared by their SHA-256,
so the configuration never holds a usable key.

    python -m connectors.auth token SUBJECT ROLE[,ROLE]   # a token from this environment's keys
    python -m connectors.auth api-key SUBJECT ROLE[,ROLE] # a new key and its config entry
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jwt

from connectors.config import AuthConfig, load_config
from connectors.lru import LruCache
from domain.access import ROLES, Principal

API_KEY_HEADER = "X-Api-Key"
ALGORITHM = "HS256"
LEEWAY_S = 30  # clock skew between the issuer and us
# The longest a token may live (exp - iat, and exp - now) when auth.token_ttl_s is shorter:
# tokens minted for a day by hand still work, an exp of 1e20 does not.
MIN_MAX_LIFETIME_S = 86_400
MAX_SUBJECT_LENGTH = 200


class AuthError(Exception):
    """The credential is missing, malformed, expired or unknown (HTTP 401)."""


def _roles(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(r, str) and r in ROLES for r in value):
        raise AuthError("roles must be a non-empty list of known roles")
    return frozenset(value)


def issue_token(config: AuthConfig, subject: str, roles: list[str], ttl_s: int | None = None) -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "roles": sorted(_roles(roles)),
        "iss": config.issuer,
        "aud": config.audience,
        "iat": now,
        "exp": now + (ttl_s if ttl_s is not None else config.token_ttl_s),
        "jti": str(uuid.uuid4()),
    }
    key = config.jwt_keys[config.signing_kid]
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": config.signing_kid})


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | None:
    """A time claim as whole seconds: PyJWT takes int("1700000000") and int(1e20) alike."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AuthError(f"claim {name} must be an integer number of seconds")
    return value


def check_claims(claims: Mapping[str, Any], now: float, max_lifetime_s: int) -> int:
    """The token's expiry once its claims have the types and bounds we issue, else AuthError.

    The signature says who wrote the token, not that what they wrote is sane: a string or
    astronomically large `exp` would make a stolen token good for ever."""
    for name in ("sub", "iss", "aud"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            raise AuthError(f"claim {name} must be a non-empty string")
    if len(claims["sub"]) > MAX_SUBJECT_LENGTH:
        raise AuthError("invalid subject")
    exp, iat, nbf = (_numeric_date(claims, name) for name in ("exp", "iat", "nbf"))
    if exp is None or iat is None:
        raise AuthError("claims exp and iat are required")
    if iat > now + LEEWAY_S:
        raise AuthError("token issued in the future")
    if nbf is not None and nbf > now + LEEWAY_S:
        raise AuthError("token not yet valid")
    if exp <= now - LEEWAY_S:
        raise AuthError("token expired")
    if exp <= iat or exp - iat > max_lifetime_s + LEEWAY_S or exp > now + max_lifetime_s + LEEWAY_S:
        raise AuthError(f"token lifetime must be positive and at most {max_lifetime_s} s")
    return exp


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    def __init__(self, config: AuthConfig, remembered_tokens: int = 10_000) -> None:
        self.config = config
        # token -> (principal, credential id, expiry): a client sends the same token with every
        # request, and checking its signature each time was a sizeable share of an API's CPU.
        self.verified: LruCache[str, tuple[Principal, str, float]] = LruCache(remembered_tokens)
        self.api_keys: dict[str, Principal] = {}
        for digest, entry in config.api_keys.items():
            subject, _, roles = entry.partition(":")
            self.api_keys[digest.lower()] = Principal(subject, _roles(roles.split(",")))

    def authenticate(self, authorization: str | None, api_key: str | None) -> tuple[Principal, str]:
        """The principal and a stable credential id (for rate limits), or AuthError."""
        for value in (api_key, authorization):
            # Header bytes outside ASCII arrive as surrogate escapes, which no encoder takes.
            if value is not None and not (value.isascii() and value.isprintable()):
                raise AuthError("credentials must be printable ASCII")
        if api_key is not None:
            principal = self.api_keys.get(hash_api_key(api_key))
            if principal is None:
                raise AuthError("unknown API key")
            return principal, "key:" + hash_api_key(api_key)[:16]
        if authorization is None:
            raise AuthError("missing credentials: send Authorization: Bearer <token> or X-Api-Key")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        return self.verify(token.strip())

    def verify(self, token: str) -> tuple[Principal, str]:
        # Only a token that passed every check is remembered; its time checks (iat, nbf) only
        # grow truer while it waits, and exp is checked again on every use.
        known = self.verified.get(token)
        if known is not None and time.time() < known[2] + LEEWAY_S:
            return known[0], known[1]
        principal, credential, expires = self._verify(token)
        self.verified.put(token, (principal, credential, expires))
        return principal, credential

    def _verify(self, token: str) -> tuple[Principal, str, float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        key = self.config.jwt_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise AuthError("token signed with an unknown or retired key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],  # never trust the token's own alg
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        expires = check_claims(claims, time.time(), max(self.config.token_ttl_s, MIN_MAX_LIFETIME_S))
        subject = claims["sub"]
        # Rate limits follow the subject: minting more tokens buys no more requests.
        return Principal(subject, _roles(claims.get("roles"))), "sub:" + subject, float(expires)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connectors.auth", description=__doc__)
    parser.add_argument("command", choices=["token", "api-key"])
    parser.add_argument("subject")
    parser.add_argument("roles", help="comma-separated: user, operator, admin")
    args = parser.parse_args(argv)
    roles = args.roles.split(",")
    try:
        _roles(roles)
    except AuthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        print(issue_token(load_config().auth, args.subject, roles))
    else:
        key = "pk_" + secrets.token_urlsafe(32)
        print(f"key (give it to the caller, it is not stored): {key}")
        print(f"auth.api_keys entry: {json.dumps({hash_api_key(key): f'{args.subject}:{args.roles}'})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
