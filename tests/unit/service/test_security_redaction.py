"""The log redaction filter: keys never, prompts only when allowed."""

from __future__ import annotations

import contextvars
import io
import logging
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from tts_orchestrator.protocol import TtsOptions
from tts_orchestrator.security.redaction import (
    REDACTED,
    RedactionFilter,
    install_redaction,
    mark_sensitive,
)

KEY = "tts-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abcd"
SECRET_PART = KEY[4:]


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(f"calling with {KEY}", id="bare-key"),
        pytest.param(f"headers: Authorization: Bearer {KEY}", id="bearer-header"),
        pytest.param(f"{{'authorization': 'Bearer {KEY}'}}", id="dict-repr"),
        pytest.param(f'{{"api-key": "{KEY}"}}', id="api-key-json"),
        pytest.param(f"[(b'authorization', b'Bearer {KEY}')]", id="asgi-headers"),
        pytest.param(f"api_key={KEY}&x=1", id="query-string"),
        pytest.param(f"url: http://h/v1?key={KEY}", id="in-url"),
    ],
)
def test_keys_are_always_redacted(line: str) -> None:
    for log_prompts in (False, True):
        out = RedactionFilter(log_prompts=log_prompts).redact(line)
        assert SECRET_PART not in out, out
        assert SECRET_PART[:16] not in out, out
        assert REDACTED in out


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        pytest.param("Authorization: Bearer someothertoken", "Bearer", id="foreign-bearer-token"),
        pytest.param("x-api-key: 0123456789", "x-api-key", id="foreign-api-key"),
    ],
)
def test_any_bearer_token_or_key_header_value_is_redacted(line: str, kept: str) -> None:
    out = RedactionFilter().redact(line)
    assert kept in out
    assert REDACTED in out
    assert "someothertoken" not in out
    assert "0123456789" not in out


PROMPT = "What is the integral of x^2 from 0 to 3?"


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(f'{{"role": "user", "content": "{PROMPT}"}}', id="json-content"),
        pytest.param(f"{{'role': 'user', 'content': '{PROMPT}'}}", id="dict-repr"),
        pytest.param(f"prompt='{PROMPT}' n=3", id="kwarg-repr"),
        pytest.param(f'{{"prompt": "{PROMPT}", "max_tokens": 5}}', id="json-prompt"),
        pytest.param(
            f"Input should be a valid integer [type=int_type, input_value='{PROMPT}', "
            "input_type=str]",
            id="pydantic-input-value",
        ),
        pytest.param(f'"reasoning_content": "{PROMPT} \\" escaped"', id="escaped-quote"),
    ],
)
def test_text_fields_are_redacted_unless_prompts_may_be_logged(line: str) -> None:
    assert PROMPT not in RedactionFilter().redact(line)
    assert PROMPT in RedactionFilter(log_prompts=True).redact(line)


def test_harmless_lines_are_left_alone() -> None:
    line = "request chatcmpl-1 finished in 1.2s with 3 branches (status=finished, code=200)"
    assert RedactionFilter().redact(line) == line


def _in_fresh_context(fn: object) -> object:
    return contextvars.copy_context().run(fn)  # type: ignore[arg-type]


def test_marked_text_is_redacted_in_any_form_within_its_context() -> None:
    prompt = 'Solve: "x + 1 = 2"\nThen explain why.'

    def inside() -> list[str]:
        mark_sensitive(prompt)
        flt = RedactionFilter()
        return [
            flt.redact(f"user said {prompt}"),
            flt.redact(f"escaped {prompt!r}"),
            flt.redact("partial: Then explain why. ok"),
        ]

    lines = _in_fresh_context(inside)
    assert isinstance(lines, list)
    for line in lines:
        assert "x + 1 = 2" not in line, line
        assert "explain why" not in line, line
    # Another request's context is not affected, and short marks are ignored.
    assert RedactionFilter().redact(f"user said {prompt}") == f"user said {prompt}"
    _in_fresh_context(lambda: mark_sensitive("2+2"))
    assert RedactionFilter().redact("2+2=4") == "2+2=4"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactionFilter())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def test_args_messages_and_tracebacks_are_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("body %s from %s", {"messages": [{"role": "user", "content": PROMPT}]}, KEY)
    logger.info("key=%(key)s", {"key": KEY})
    try:
        TtsOptions.model_validate({"n_branches": PROMPT})
    except ValidationError:
        logger.exception("bad options with Bearer %s", KEY)
    try:
        raise RuntimeError(f"engine failed on prompt={PROMPT!r} with {KEY}")
    except RuntimeError:
        logger.error("unexpected", exc_info=True)
    logger.info("extra", extra={"prompt": PROMPT})
    text = stream.getvalue()
    assert "Traceback" in text
    assert "RuntimeError" in text
    assert "n_branches" in text
    assert SECRET_PART not in text, text
    assert PROMPT not in text, text


def test_untouched_records_keep_their_arguments() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s"', ("1.2.3.4", "GET", "/x"), None
    )
    assert RedactionFilter().filter(record)
    assert record.args == ("1.2.3.4", "GET", "/x")
    assert record.getMessage() == '1.2.3.4 - "GET /x"'
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s"',
        ("1.2.3.4", "GET", f"/x?k={KEY}"),
        None,
    )
    assert RedactionFilter().filter(record)
    assert isinstance(record.args, tuple)
    assert len(record.args) == 3
    assert SECRET_PART not in record.getMessage()


def test_a_broken_format_drops_the_arguments_instead_of_leaking_them() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", (KEY,), None)
    RedactionFilter().filter(record)
    assert record.args is None
    assert SECRET_PART not in record.getMessage()


def test_install_attaches_to_every_handler_and_detaches() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tests.redaction.install")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        uninstall = install_redaction()
        logger.warning("leak %s", KEY)
        uninstall()
        logger.warning("after %s", KEY)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, second = stream.getvalue().splitlines()
    assert SECRET_PART not in first
    assert SECRET_PART in second
