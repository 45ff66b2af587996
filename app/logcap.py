"""Log lines capped in length (issue 22, point 7): a user can type a 100k-character edit
string or prompt, and whatever logs it (our refusals, transformers' or diffusers' truncation
warnings, which have their own handlers) would print it whole. A log-record factory caps every
record's message where it is made, so it holds for every logger and handler."""

from __future__ import annotations

import logging
from typing import Any

MAX_LOG_CHARS = 2000
"""The longest log message kept whole; longer ones keep their start and say how much was cut."""

_state: dict[str, Any] = {}


def capped(message: str, limit: int = MAX_LOG_CHARS) -> str:
    """`message` if it is at most `limit` characters, else its start and the count cut."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}… [{len(message) - limit} more characters not logged]"


def cap_log_records(limit: int = MAX_LOG_CHARS) -> None:
    """Install (once per process) the record factory that caps every log message at `limit`."""
    _state["limit"] = limit
    if "factory" in _state:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error report
            return record
        if len(message) > _state["limit"]:
            record.msg, record.args = capped(message, _state["limit"]), None
        return record

    _state["factory"] = factory
    logging.setLogRecordFactory(factory)
