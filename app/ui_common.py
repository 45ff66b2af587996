"""What every tab module shares (gradio): the error guard, jobs run off the event loop,
the upload component that hands us the file, and the `UI` record tabs wire events with.

The guard is the only place errors become `gr.Error`: the library's clear messages reach
the user, anything else is logged with its traceback and shown as a generic line, so no
server path or trace reaches a browser.
"""

from __future__ import annotations

import asyncio
import functools
import html
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import gradio as gr

from precompute.images import BadImage

from .jobs import Cancelled, Job

log = logging.getLogger(__name__)

EXPECTED = (ValueError, BadImage, FileNotFoundError, Cancelled)


def _user_error(exc: BaseException) -> gr.Error:
    """A message for the browser: HTML-escaped (a `<` must not swallow the rest), one line,
    not printed as a traceback in the server log."""
    text = " ".join(str(exc).split())[:500]
    return gr.Error(html.escape(text, quote=False), print_exception=False)


def guard(fn: Callable) -> Callable:
    """Run a handler: expected errors become a message, unexpected ones a generic message
    (their traceback goes to the log only). Keeps the handler's signature, so the API shows
    its parameter names."""

    def handle(exc: Exception) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, EXPECTED):
            log.info("%s: %.300s", fn.__name__, exc)  # capped: the message can quote user input
            return _user_error(exc)
        log.exception("%s failed", fn.__name__)
        return gr.Error("something went wrong on the server (the server log has the details)", print_exception=False)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                raise handle(exc) from None

        return wrapped_async

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise handle(exc) from None

    return wrapped


async def run_job(
    fn: Callable, *args: Any, request: gr.Request | None, progress: gr.Progress | None, **kwargs: Any
) -> Any:
    """Run a generation handler in a worker thread with a `Job`. When Gradio cancels the
    event (the Stop button, a client's cancel), the job's flag is set, so the diffusion loop
    stops at its next step instead of running on in the background."""
    session = getattr(request, "session_hash", None) or "api"
    job = Job(session=session, report=(lambda f, text: progress(f, desc=text)) if progress is not None else None)
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, job=job, **kwargs), abandon_on_cancel=True)
    except (asyncio.CancelledError, anyio.get_cancelled_exc_class()):
        job.cancel()
        log.info("generation of session %s cancelled", session[:8])
        raise


def _file_path(payload: Any) -> str | None:
    return None if payload is None else str(getattr(payload, "path", None) or "")


def upload_image(**kwargs: Any) -> gr.Image:
    """An image upload whose handlers get the uploaded file's path, never a decoded image:
    Gradio's own decoding (which fails on a non-image with an internal error naming its
    temp folder) is skipped, so that ours (`app.inputs.read_upload`) sees every upload.
    Gradio has already checked that the path lies in its upload folder. The override is
    per instance: subclassing a Gradio component makes Gradio write a .pyi stub beside
    this file at import."""
    component = gr.Image(type="filepath", **kwargs)
    component.preprocess = _file_path  # type: ignore[method-assign]
    return component


@dataclass
class UI:
    """What tabs share when they wire events: the Blocks, the tab set, every tab's components."""

    blocks: gr.Blocks
    tabs: gr.Tabs
    comps: dict[str, dict[str, Any]] = field(default_factory=dict)
    tab_of: dict[str, gr.Tab] = field(default_factory=dict)
    """Each tab's gr.Tab by ID (for its `select` event)."""
