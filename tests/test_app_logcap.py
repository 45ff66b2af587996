"""Log lines from user input are capped (issue 22, point 7), for our loggers and for a
library logger with its own handler that does not propagate (as transformers' and diffusers' do)."""

from __future__ import annotations

import io
import logging

from app.logcap import MAX_LOG_CHARS, cap_log_records, capped


def test_capped_keeps_short_messages_and_says_how_much_was_cut():
    assert capped("short") == "short"
    long = "x" * 100_000
    out = capped(long)
    assert out.startswith("x" * MAX_LOG_CHARS) and out.endswith(
        f"[{100_000 - MAX_LOG_CHARS} more characters not logged]"
    )
    assert len(out) < MAX_LOG_CHARS + 60


def test_every_logger_writes_a_100k_character_input_capped():
    cap_log_records()
    cap_log_records()  # idempotent: one factory, not a chain
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    library = logging.getLogger("test_logcap.library")  # like transformers: own handler, no propagation
    library.addHandler(handler)
    library.propagate = False
    library.setLevel(logging.INFO)
    try:
        prompt = "a red boat " * 10_000
        library.warning("The following part of your input was truncated: %s", prompt)
        library.info("steer: edits %r refused", "0:1," * 25_000)
        library.info("a short line %d", 3)
    finally:
        library.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[2] == "a short line 3"
    for line in lines[:2]:
        assert len(line) < MAX_LOG_CHARS + 60 and line.endswith("more characters not logged]")
    assert lines[0].startswith("The following part of your input was truncated: a red boat")
