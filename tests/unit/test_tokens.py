"""Operator tokens: keys named by ``kid`` (rotation), ``jti`` (revocation), expiry, scopes."""

from __future__ import annotations

import jwt
import pytest
from pydantic import SecretStr

from notifier.tokens import Keys, TokenError, key_id, mint_token, token_id, verify_token

OLD, NEW = "o" * 32, "n" * 32


def test_a_token_names_its_key_and_carries_a_token_id() -> None:
    token = mint_token(NEW, "demo", "alice")
    assert jwt.get_unverified_header(token)["kid"] == key_id(NEW)
    operator = verify_token(NEW, token)
    assert (operator.customer_id, operator.operator, operator.token_id) == (
        "demo", "alice", token_id(token)
    )  # fmt: skip
    assert len(operator.token_id) == 32
    assert token_id(mint_token(NEW, "demo", "alice")) != (operator.token_id)


def test_during_a_rotation_tokens_of_the_previous_secret_are_accepted_then_not() -> None:
    old_token = mint_token(OLD, "demo", "alice")
    rotating = Keys(NEW, [OLD])
    assert verify_token(rotating, old_token).operator == "alice"
    new_token = mint_token(rotating, "demo", "bob")  # signed with the new one
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(NEW)
    assert verify_token(NEW, new_token).operator == "bob"
    with pytest.raises(TokenError, match="key not accepted"):
        verify_token(Keys(NEW), old_token)  # rotation over


def test_a_revoked_token_is_refused() -> None:
    token = mint_token(NEW, "demo", "alice")
    with pytest.raises(TokenError, match="token revoked"):
        verify_token(NEW, token, revoked={token_id(token)})
    assert verify_token(NEW, token, revoked={"another"}).operator == "alice"


def test_a_token_without_a_token_id_is_refused() -> None:
    claims = {"sub": "alice", "customer_id": "demo", "scope": "read act", "exp": 2**40}
    token = jwt.encode(claims, NEW, algorithm="HS256", headers={"kid": key_id(NEW)})
    with pytest.raises(TokenError, match="jti"):
        verify_token(NEW, token)


def test_a_short_previous_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Keys(NEW, ["short"])


def test_the_notifier_reads_previous_secrets_from_its_settings() -> None:
    from streams.app.services import require_keys
    from streams.settings import Settings

    keys = require_keys(
        Settings(
            notifier_secret=SecretStr(NEW),
            notifier_previous_secrets=SecretStr(f"{OLD}, {'p' * 40}"),
        )
    )
    assert keys.current == NEW
    assert set(keys.by_kid) == {key_id(NEW), key_id(OLD), key_id("p" * 40)}
