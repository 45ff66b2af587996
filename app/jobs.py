"""Generation jobs: a cancel flag that the diffusion loop checks at every step, progress
reports, and one queue that every generation shares fairly (no gradio).

    job = Job(session="abc", report=lambda fraction, text: ...)
    with queue.turn(job):            # waits for this session's turn (round-robin over sessions)
        pipe(..., callback_on_step_end=step_callback(job, ...))   # raises Cancelled once job.cancel()

Why: a Gradio cancel only abandons the asyncio task; the thread that runs the diffusion
loop keeps going (and, before this module, kept the only generation lock). Here the
loop itself stops at the next decoder step, so the queue is free a step later.

Fairness: one generation runs at a time; when it ends, the next job comes from the
waiting session that was served least recently (new sessions first), so a user who
queues ten jobs does not make the next user wait for all ten.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class Cancelled(Exception):
    """The job was stopped by its user (Stop button) or its client (cancel / disconnect)."""


@dataclass(eq=False)
class Job:
    """One generation request: who asked (for fairness), where progress goes, a cancel flag."""

    session: str = "local"
    """The Gradio session (one per browser tab or gradio_client)."""
    report: Callable[[float, str], None] | None = None
    """Called with (fraction done, text) at every decoder step and while waiting."""
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Ask the job to stop: a waiting job leaves the queue, a running one stops at its next step."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise Cancelled if the job was asked to stop."""
        if self._cancel.is_set():
            raise Cancelled("generation stopped")

    def progress(self, fraction: float, text: str) -> None:
        if self.report is not None:
            self.report(min(max(fraction, 0.0), 1.0), text)


class FairQueue:
    """One generation at a time; waiting jobs are served least-recently-served session first."""

    def __init__(self, poll_s: float = 0.2):
        self._cond = threading.Condition()
        self._waiting: dict[str, deque[Job]] = {}
        self._served: dict[str, int] = {}
        self._turns = 0
        self._poll_s = poll_s
        self.running: Job | None = None

    def _order(self) -> list[Job]:
        """The waiting jobs in the order they will run (a simulation of the turn rule)."""
        queues = {s: deque(q) for s, q in self._waiting.items() if q}
        served, turn, order = dict(self._served), self._turns, []
        while queues:
            session = min(queues, key=lambda s: served.get(s, -1))  # dicts keep arrival order on ties
            order.append(queues[session].popleft())
            turn += 1
            served[session] = turn
            if not queues[session]:
                del queues[session]
        return order

    def ahead_of(self, job: Job) -> int:
        """How many generations will run before this job (the running one included)."""
        with self._cond:
            order = self._order()
            position = order.index(job) if job in order else 0
            return position + (self.running is not None and self.running is not job)

    @contextmanager
    def turn(self, job: Job) -> Iterator[None]:
        """Wait for the job's turn (reporting its place), run the block, then pass the turn on.
        Raises Cancelled if the job is cancelled while it waits."""
        with self._cond:
            self._waiting.setdefault(job.session, deque()).append(job)
            try:
                while self.running is not None or self._order()[0] is not job:
                    job.check()
                    ahead = self._order().index(job) + (self.running is not None)
                    job.progress(0.0, f"waiting for the generator: {ahead} generation(s) ahead of yours")
                    self._cond.wait(self._poll_s)
                job.check()
            except BaseException:
                self._remove(job)
                self._cond.notify_all()
                raise
            self._remove(job)
            self._turns += 1
            self._served[job.session] = self._turns
            self.running = job
        try:
            yield
        finally:
            with self._cond:
                self.running = None
                self._cond.notify_all()

    def _remove(self, job: Job) -> None:
        q = self._waiting.get(job.session)
        if q is not None and job in q:
            q.remove(job)
            if not q:
                del self._waiting[job.session]
