"""Operator tokens: HS256 JWTs carrying ``sub``, ``customer_id``, ``scope`` and ``exp``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
SCOPES = frozenset({"read", "act"})
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash


def check_secret(secret: str) -> None:
    """Raise ValueError unless ``secret`` is usable as an HS256 key."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"UPSTREAM_NOTIFIER_SECRET must be at least {MIN_SECRET_BYTES} bytes "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )


class TokenError(Exception):
    """A token that must be refused; ``close_code`` is the WebSocket close code to use."""

    def __init__(self, message: str, close_code: int = CLOSE_UNAUTHORIZED) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class Operator:
    """Who a verified token speaks for."""

    operator: str
    customer_id: str
    scopes: frozenset[str]
    expires_at_s: float = float("inf")  # the token's ``exp``, seconds since the epoch

    def can(self, scope: str) -> bool:
        """Whether the token grants ``scope``."""
        return scope in self.scopes

    def expired(self, now_s: float | None = None) -> bool:
        """Whether the token has expired (at ``now_s``, default now)."""
        return (time.time() if now_s is None else now_s) >= self.expires_at_s


def mint_token(
    secret: str,
    customer_id: str,
    operator: str,
    scopes: tuple[str, ...] = ("read", "act"),
    ttl_s: int = 12 * 3600,
    now_s: float | None = None,
) -> str:
    """A signed token for ``operator`` of ``customer_id``, valid for ``ttl_s`` seconds."""
    check_secret(secret)
    unknown = set(scopes) - SCOPES
    if unknown:
        raise ValueError(f"unknown scopes {sorted(unknown)}; valid: {sorted(SCOPES)}")
    issued = int(now_s if now_s is not None else time.time())
    claims = {
        "sub": operator,
        "customer_id": customer_id,
        "scope": " ".join(scopes),
        "iat": issued,
        "exp": issued + ttl_s,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Operator:
    """Verify signature, algorithm (HS256 only) and expiry; raise :class:`TokenError`."""
    if not token:
        raise TokenError("missing token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub", "customer_id", "scope"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    scopes = frozenset(str(claims["scope"]).split()) & SCOPES
    if "read" not in scopes:
        raise TokenError("token lacks the read scope", CLOSE_FORBIDDEN)
    return Operator(str(claims["sub"]), str(claims["customer_id"]), scopes, float(claims["exp"]))
