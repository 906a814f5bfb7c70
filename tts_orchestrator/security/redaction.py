"""Keep API keys, and unless allowed, prompt text, out of the logs.

:class:`RedactionFilter` rewrites every record that reaches a handler it is attached to:

- secrets, always: ``Bearer <token>``, anything shaped like our keys (``tts-...``), and the
  values of ``authorization`` / ``api-key`` fields;
- text, unless ``log_prompts``: quoted values of fields that carry prompts or outputs
  (``"content": "..."``, ``prompt='...'``, pydantic's ``input_value='...'``), and any text the
  current request marked with :func:`mark_sensitive` (a context variable, so the mark follows
  the request into the tasks it starts).

It is attached to handlers rather than loggers because a logger's filters never see the
records its children propagate; :func:`install_redaction` attaches it to every handler there
is when it runs (call it after logging is configured, e.g. in the app's lifespan).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

REDACTED = "<redacted>"
MIN_SENSITIVE_CHARS = 8

_VALUE_END = r"[^\s'\",;)}\]]+"
_BEARER = re.compile(rf"(?i)\b(bearer)\s+(?!{re.escape(REDACTED)}){_VALUE_END}")
_API_KEY = re.compile(r"tts-[A-Za-z0-9_-]{16,}")
_HEADER = re.compile(
    r"(?i)(['\"]?\b(?:authorization|x-api-key|api[-_]key)['\"]?\s*[:=]\s*(?:b?['\"])?)"
    rf"(?!bearer\b|{re.escape(REDACTED)}){_VALUE_END}"
)
_TEXT_FIELDS = (
    "content|prompt|prompts|text|input|input_value|reasoning_content|reasoning|answer|generated"
)
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"
_TEXT_VALUE = re.compile(rf"(?i)(['\"]?\b(?:{_TEXT_FIELDS})['\"]?\s*[:=]\s*)b?(?:{_QUOTED})")
_TEXT_ATTRIBUTES = frozenset(_TEXT_FIELDS.split("|")) | {"messages", "body"}

_SENSITIVE: ContextVar[tuple[str, ...]] = ContextVar("tts_sensitive_text", default=())
_EXCEPTION_FORMATTER = logging.Formatter()


def _variants(text: str) -> set[str]:
    """The forms ``text`` takes in a log line: as is, JSON-escaped, repr-escaped; and its lines."""
    out = {text, json.dumps(text)[1:-1], repr(text)[1:-1]}
    out.update(line.strip() for line in text.splitlines())
    return {v for v in out if len(v) >= MIN_SENSITIVE_CHARS}


def mark_sensitive(*texts: str) -> None:
    """Redact these texts (e.g. a request's messages) from log records in this context."""
    marked = set(_SENSITIVE.get())
    for text in texts:
        marked |= _variants(text)
    _SENSITIVE.set(tuple(sorted(marked, key=len, reverse=True)))


def redact_secrets(text: str) -> str:
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    return _API_KEY.sub(f"tts-{REDACTED}", text)


def redact_text(text: str) -> str:
    for sensitive in _SENSITIVE.get():
        text = text.replace(sensitive, REDACTED)
    return _TEXT_VALUE.sub(lambda m: f"{m.group(1)}'{REDACTED}'", text)


class RedactionFilter(logging.Filter):
    """Rewrites records in place; never drops one."""

    def __init__(self, *, log_prompts: bool = False) -> None:
        super().__init__()
        self.log_prompts = log_prompts

    def redact(self, text: str) -> str:
        text = redact_secrets(text)
        return text if self.log_prompts else redact_text(text)

    def filter(self, record: logging.LogRecord) -> bool:
        self._redact_message(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        if not self.log_prompts:
            for name in _TEXT_ATTRIBUTES & record.__dict__.keys():
                setattr(record, name, REDACTED)
        return True

    def _redact_message(self, record: logging.LogRecord) -> None:
        # Redact the arguments one by one, so that formatters that read `record.args` (such
        # as uvicorn's access log) keep working; flatten the message only as a last resort.
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self._redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._redact_arg(v) for k, v in record.args.items()}
        try:
            message = record.getMessage()
        except Exception:  # a broken format: logging would print the raw arguments
            record.msg, record.args = self.redact(str(record.msg)) + " [arguments dropped]", None
            return
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None

    def _redact_arg(self, arg: Any) -> Any:
        if arg is None or isinstance(arg, int | float):
            return arg
        text = arg if isinstance(arg, str) else str(arg)
        redacted = self.redact(text)
        if redacted != text:
            return redacted
        if not isinstance(arg, str):
            shown = repr(arg)  # what `%r` would print
            if self.redact(shown) != shown:
                return self.redact(shown)
        return arg


def install_redaction(*, log_prompts: bool = False) -> Callable[[], None]:
    """Attach one :class:`RedactionFilter` to every handler now configured (and to logging's
    last-resort handler); returns the function that detaches it."""
    flt = RedactionFilter(log_prompts=log_prompts)
    handlers: set[logging.Handler] = set(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.update(logger.handlers)
    if logging.lastResort is not None:
        handlers.add(logging.lastResort)
    for handler in handlers:
        handler.addFilter(flt)

    def uninstall() -> None:
        for handler in handlers:
            handler.removeFilter(flt)

    return uninstall
