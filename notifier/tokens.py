"""Operator tokens: HS256 JWTs carrying ``sub``, ``customer_id``, ``scope``, ``exp`` and ``jti``.

A token names the key it was signed with (``kid``, a digest of the secret): :class:`Keys`
holds the secret new tokens are signed with and the earlier ones still accepted while a
secret is rotated. A token's ``jti`` can be revoked (``upstream token revoke``): the notifier
refuses it and closes the connections that use it.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Container, Sequence
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


def key_id(secret: str) -> str:
    """The ``kid`` of tokens signed with ``secret``: a digest, which does not reveal it."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


class Keys:
    """The secret that signs new tokens, and earlier secrets still accepted (a rotation)."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        for secret in (current, *previous):
            check_secret(secret)
        self.current = current
        self.kid = key_id(current)
        self.by_kid = {key_id(secret): secret for secret in (*previous, current)}

    @classmethod
    def of(cls, keys: Keys | str) -> Keys:
        """``keys``, or a single secret as :class:`Keys`."""
        return keys if isinstance(keys, Keys) else cls(keys)


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
    token_id: str = ""  # the token's ``jti``, which ``upstream token revoke`` names

    def can(self, scope: str) -> bool:
        """Whether the token grants ``scope``."""
        return scope in self.scopes

    def expired(self, now_s: float | None = None) -> bool:
        """Whether the token has expired (at ``now_s``, default now)."""
        return (time.time() if now_s is None else now_s) >= self.expires_at_s


def mint_token(
    secret: Keys | str,
    customer_id: str,
    operator: str,
    scopes: tuple[str, ...] = ("read", "act"),
    ttl_s: int = 12 * 3600,
    now_s: float | None = None,
) -> str:
    """A token for ``operator`` of ``customer_id``, valid for ``ttl_s`` seconds, signed with
    the current key (a single secret, or :class:`Keys`)."""
    keys = Keys.of(secret)
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
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, keys.current, algorithm=ALGORITHM, headers={"kid": keys.kid})


def token_id(token: str) -> str:
    """The ``jti`` of ``token``, read without verifying it (to name it to ``revoke``)."""
    return str(jwt.decode(token, options={"verify_signature": False}).get("jti", ""))


def verify_token(secret: Keys | str, token: str, revoked: Container[str] = ()) -> Operator:
    """Verify signature (by the key its ``kid`` names), algorithm (HS256 only), expiry and
    that its ``jti`` is not ``revoked``; raise :class:`TokenError`."""
    if not token:
        raise TokenError("missing token")
    keys = Keys.of(secret)
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = keys.by_kid.get(str(kid)) if kid is not None else keys.current
        if key is None:
            raise TokenError("invalid token: signed with a key not accepted here")
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub", "customer_id", "scope", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    if str(claims["jti"]) in revoked:
        raise TokenError("token revoked")
    scopes = frozenset(str(claims["scope"]).split()) & SCOPES
    if "read" not in scopes:
        raise TokenError("token lacks the read scope", CLOSE_FORBIDDEN)
    return Operator(str(claims["sub"]), str(claims["customer_id"]), scopes,
                    float(claims["exp"]), str(claims["jti"]))  # fmt: skip
