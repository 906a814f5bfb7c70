from __future__ import annotations

import re

import pytest

from tts_orchestrator.config import RedisConfig
from tts_orchestrator.state.schema import (
    KeySchema,
    KeyTtls,
    branch_field,
    is_valid_request_id,
    parse_branch_field,
)


def _hash_tag(key: str) -> str:
    match = re.search(r"\{([^}]+)\}", key)
    assert match is not None, key
    return match.group(1)


def test_a_requests_keys_share_one_cluster_slot() -> None:
    keys = KeySchema()
    request_keys = [keys.request("r1"), keys.branches("r1"), keys.cancel_flag("r1")]
    assert len(set(request_keys)) == 3
    assert {_hash_tag(k) for k in request_keys} == {"req:r1"}
    assert _hash_tag(keys.request("r2")) != _hash_tag(keys.request("r1"))


def test_every_name_lives_under_the_prefix() -> None:
    keys = KeySchema(prefix="blue")
    names = [
        keys.request("r"),
        keys.branches("r"),
        keys.cancel_flag("r"),
        keys.cancel_channel("r"),
        keys.cancel_pattern,
        keys.verifier_stream,
        keys.live_profile("cpu"),
        keys.pool_workers("cpu"),
        keys.api_key("ab" * 32),
    ]
    assert all(n.startswith("blue:") for n in names)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("channel", "request_id"),
    [
        pytest.param("tts:cancel:req-1", "req-1", id="own-channel"),
        pytest.param("tts:cancel:a:b", "a:b", id="id-with-colon"),
        pytest.param("other:cancel:req-1", None, id="other-prefix"),
        pytest.param("tts:verifier:thoughts", None, id="not-a-cancel-channel"),
    ],
)
def test_request_id_from_cancel_channel(channel: str, request_id: str | None) -> None:
    assert KeySchema().request_id_from_cancel_channel(channel) == request_id


def test_cancel_pattern_matches_cancel_channels() -> None:
    keys = KeySchema()
    assert re.fullmatch(keys.cancel_pattern.replace("*", ".*"), keys.cancel_channel("req-9"))


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        pytest.param(branch_field(3, "tokens"), (3, "tokens"), id="round-trip"),
        pytest.param("12:abort_reason", (12, "abort_reason"), id="two-digits"),
        pytest.param("x:tokens", None, id="non-numeric-index"),
        pytest.param("3", None, id="no-field"),
        pytest.param("3:", None, id="empty-field"),
        pytest.param("-1:tokens", None, id="negative-index"),
    ],
)
def test_parse_branch_field(name: str, parsed: tuple[int, str] | None) -> None:
    assert parse_branch_field(name) == parsed


@pytest.mark.parametrize(
    ("request_id", "valid"),
    [
        ("chatcmpl-0123abcd", True),
        ("cmpl_1.2:3", True),
        ("", False),
        ("a b", False),
        ("a{b}", False),
        ("*", False),
    ],
)
def test_is_valid_request_id(request_id: str, valid: bool) -> None:
    assert is_valid_request_id(request_id) is valid


def test_record_ttl_comes_from_config() -> None:
    assert KeyTtls.from_config(RedisConfig.model_validate({"record_ttl_s": 60})).record_s == 60
