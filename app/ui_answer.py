"""A refused input answers where the user is looking and blocks nothing (issue 22, point 1,
for the tabs and panels of `ui_lists` and `ui_explore`): an expected error (ValueError,
BadImage, …) becomes a toast (`gr.Warning`) and one line in the event's status output, and
every other output is left as it was (`gr.skip()`), so no component gets an "Error" badge
and the next action acts on what the page shows. Unexpected errors go on to `guard`."""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from .ui_common import EXPECTED, guard

log = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    return html.escape(" ".join(str(exc).split())[:500], quote=False)


def answer(fn: Callable, n_outputs: int, status: int | None = None) -> Callable:
    """`fn` for an event with `n_outputs` outputs, the one at index `status` (if any) a
    Markdown line that gets the message. Run the event with the queue (toasts need it)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EXPECTED as exc:
            log.info("%s: %.300s", fn.__name__, exc)  # capped: the message can quote user input
            text = one_line(exc)
            gr.Warning(text)
            out: list[Any] = [gr.skip()] * n_outputs
            if status is not None:
                out[status] = f"⚠️ {text}"
            return tuple(out) if n_outputs > 1 else out[0]

    return guard(run)


def answered(fn: Callable, n_outputs: int) -> Callable:
    """`fn` (returning `n_outputs` values) for a UI event whose outputs are those plus one
    status line after them: cleared when `fn` succeeds, the refusal (and a toast) when it
    raises an expected error, every other output then left as it was. The documented API
    keeps `guard(fn)` on its own event, so API clients still get an error."""

    @functools.wraps(fn)
    def ok(*args: Any, **kwargs: Any) -> tuple:
        out = fn(*args, **kwargs)
        return (*(out if isinstance(out, tuple) else (out,)), "")

    return answer(ok, n_outputs + 1, status=n_outputs)
