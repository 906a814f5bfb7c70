"""Pure parts of API keys: their shape, their hash, the names of their Redis keys."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from pydantic import ValidationError

from tts_orchestrator.config.security import KeyLimits, SecurityConfig
from tts_orchestrator.security.keys import (
    ApiKeyRecord,
    IssuedKey,
    KeyHasher,
    SecurityKeySchema,
    _decode,
    _encode,
    is_key_id,
    looks_like_api_key,
    new_api_key,
)
from tts_orchestrator.state.schema import KeySchema


def test_new_keys_carry_32_random_bytes_behind_the_prefix() -> None:
    keys = {new_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"tts-[A-Za-z0-9_-]{43}", key), key
        assert looks_like_api_key(key)


@pytest.mark.parametrize(
    "candidate",
    [
        pytest.param("", id="empty"),
        pytest.param("tts-", id="prefix-only"),
        pytest.param("sk-" + "a" * 43, id="other-prefix"),
        pytest.param("tts-" + "a" * 42, id="short"),
        pytest.param("tts-" + "a" * 44, id="long"),
        pytest.param("tts-" + "a" * 42 + "=", id="padding"),
        pytest.param("tts-" + "a" * 42 + " ", id="trailing-space"),
        pytest.param("TTS-" + "a" * 43, id="upper-prefix"),
    ],
)
def test_malformed_keys_are_refused_by_shape(candidate: str) -> None:
    assert not looks_like_api_key(candidate)


@pytest.mark.parametrize(
    ("candidate", "valid"),
    [
        pytest.param("key_0123456789abcdef", True, id="valid"),
        pytest.param("key_0123456789ABCDEF", False, id="upper-hex"),
        pytest.param("key_0123", False, id="short"),
        pytest.param("key_0123456789abcdef/../x", False, id="path"),
    ],
)
def test_key_ids(candidate: str, valid: bool) -> None:
    assert is_key_id(candidate) is valid


def test_the_stored_digest_is_an_hmac_under_the_pepper() -> None:
    key = new_api_key()
    digest = KeyHasher("pepper-1").digest(key)
    assert digest == hmac.new(b"pepper-1", key.encode(), hashlib.sha256).hexdigest()
    assert digest == KeyHasher("pepper-1").digest(key)
    assert digest != KeyHasher("pepper-2").digest(key)
    assert digest != KeyHasher().digest(key)
    assert key not in digest
    assert key[4:] not in digest


def test_the_pepper_never_shows_in_reprs() -> None:
    assert "s3cret" not in repr(KeyHasher("s3cret"))
    config = SecurityConfig.model_validate({"pepper": "s3cret"})
    assert "s3cret" not in repr(config)
    assert "s3cret" not in config.model_dump_json()
    assert config.pepper is not None
    assert config.pepper.get_secret_value() == "s3cret"


def test_an_issued_key_hides_its_secret_in_repr() -> None:
    record = ApiKeyRecord(id="key_0123456789abcdef", name="ci", created_at=1.0)
    issued = IssuedKey(record=record, secret=new_api_key())
    assert issued.secret not in repr(issued)


def test_limit_keys_of_one_api_key_share_a_cluster_slot() -> None:
    keys = SecurityKeySchema(KeySchema(prefix="blue"))
    names = [keys.rate("key_1"), keys.leases("key_1"), keys.tokens("key_1", "2026-01-02")]
    assert len(set(names)) == 3
    assert {re.search(r"\{([^}]+)\}", n).group(1) for n in names} == {"apikey:key_1"}  # type: ignore[union-attr]
    assert all(n.startswith("blue:") for n in [*names, keys.index, keys.record("ab")])
    assert keys.record("ab") == KeySchema(prefix="blue").api_key("ab")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param("a\nb", id="newline"),
        pytest.param("a\x1b[31m", id="escape"),
    ],
)
def test_key_names_are_short_and_printable(name: str) -> None:
    with pytest.raises(ValidationError):
        ApiKeyRecord(id="key_0123456789abcdef", name=name, created_at=1.0)


@pytest.mark.parametrize(
    "field",
    ["requests_per_minute", "max_concurrent", "daily_tokens", "max_branches", "max_tokens"],
)
def test_limits_are_positive_or_unlimited(field: str) -> None:
    assert getattr(KeyLimits.model_validate({field: None}), field) is None
    with pytest.raises(ValidationError):
        KeyLimits.model_validate({field: 0})


def test_security_is_off_and_quiet_by_default() -> None:
    config = SecurityConfig()
    assert not config.enabled
    assert config.cors_origins == []
    assert not config.log_prompts
    assert config.pepper is None


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param(KeyLimits(), id="defaults"),
        pytest.param(
            KeyLimits(requests_per_minute=None, max_concurrent=None, daily_tokens=None),
            id="unlimited-stays-unlimited",
        ),
        pytest.param(KeyLimits(requests_per_minute=3, max_branches=2, max_tokens=48), id="caps"),
    ],
)
def test_a_stored_record_reads_back_with_the_same_limits(limits: KeyLimits) -> None:
    record = ApiKeyRecord(id="key_0123456789abcdef", name="n", created_at=1.0, limits=limits)
    encoded = _encode(record)
    stored = dict(zip(encoded[::2], encoded[1::2], strict=True))
    assert "revoked_at" not in stored
    assert _decode(stored) == record
