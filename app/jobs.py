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

Preemption at step boundaries: the diffusion loop calls `job.step_boundary(suspend)` after
every step. When the job that the turn rule puts first is a *new* job of *another*
session, the running job hands the turn over there and then (its loop stays paused on
its own thread, `suspend` saving what the next job would overwrite), and resumes when the
turn rule picks it again. So a short job waits behind a long one of another session for
at most the step under way, never for the rest of that job; a paused job is not
preempted again by the job it let in.

Priority: `in_generation_thread` runs a pipeline call on a fresh thread with a lower CPU
priority (nice +10) and half the cores' torch threads, so that browsing (at normal
priority, on Gradio's threads) keeps the CPU it needs while a generation runs.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
GENERATION_NICE = 10
"""How much lower a generation thread's CPU priority is than the server's (Linux nice)."""


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
    started: bool = field(default=False, repr=False)
    """Whether the job has had a turn (a started job is resumed, never preempts)."""
    _queue: FairQueue | None = field(default=None, repr=False)

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

    def step_boundary(self, suspend: Suspend | None = None) -> None:
        """Called between two steps of the job's loop: raise Cancelled if asked to stop, and,
        holding a turn, hand it to a new job of another session that should run first (see
        the module's docstring). `suspend()` is called before handing over and returns what
        to call on resuming (with True, or False when cancelled while paused)."""
        self.check()
        if self._queue is not None:
            self._queue.preempt_point(self, suspend)

    def progress(self, fraction: float, text: str) -> None:
        if self.report is not None:
            self.report(min(max(fraction, 0.0), 1.0), text)


Suspend = Callable[[], Callable[[bool], None]]
"""Save/release what a paused job holds; returns the function that restores it on resuming."""


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

    def _wait_for_turn(self, job: Job) -> None:
        """With the lock held: queue the job (a paused one at the head of its session) and wait
        until the turn rule picks it; then it runs. Cancelled leaves the queue at once."""
        q = self._waiting.setdefault(job.session, deque())
        if job.started:
            q.appendleft(job)  # a paused job resumes before its session's newer ones
        else:
            q.append(job)
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
        self.running, job.started = job, True

    @contextmanager
    def turn(self, job: Job) -> Iterator[None]:
        """Wait for the job's turn (reporting its place), run the block, then pass the turn on.
        Raises Cancelled if the job is cancelled while it waits. Inside the block the job's
        `step_boundary` may pause it for a new job of another session (`preempt_point`)."""
        with self._cond:
            self._wait_for_turn(job)
            job._queue = self
        try:
            yield
        finally:
            with self._cond:
                job._queue = None
                if self.running is job:
                    self.running = None
                self._cond.notify_all()

    def should_yield(self, job: Job) -> bool:
        """Whether the running `job` should hand its turn over now: the turn rule puts first a
        job that has not started yet, of another session."""
        with self._cond:
            order = self._order()
            return self.running is job and bool(order) and not order[0].started and order[0].session != job.session

    def preempt_point(self, job: Job, suspend: Suspend | None = None) -> None:
        """At a step boundary of the running `job`: if it should yield, pause it (calling
        `suspend`), let the others run, and return once it has the turn again."""
        if not self.should_yield(job):
            return
        resume = suspend() if suspend is not None else None
        resumed = False
        try:
            with self._cond:
                self.running = None
                self._cond.notify_all()
                self._wait_for_turn(job)
            resumed = True
        finally:
            if resume is not None:
                resume(resumed)

    def _remove(self, job: Job) -> None:
        q = self._waiting.get(job.session)
        if q is not None and job in q:
            q.remove(job)
            if not q:
                del self._waiting[job.session]


def generation_threads(cpus: int | None = None) -> int:
    """The torch threads of one generation: half the cores, at least one."""
    return max(1, (cpus or os.cpu_count() or 2) // 2)


def in_generation_thread(fn: Callable[[], T], nice: int = GENERATION_NICE, threads: int | None = None) -> T:
    """`fn()` run on a new thread whose CPU priority is `nice` steps lower (Linux: priority is
    per thread, and the torch worker threads it starts inherit it) and whose torch intra-op
    threads are `threads` (default `generation_threads()`; torch's count is per thread);
    returns its value or raises its exception. The calling thread keeps its priority. `fn`
    runs in a copy of the caller's context variables (Gradio's progress reports go through
    them: without the copy a job's step lines never reach its page)."""
    out: dict[str, object] = {}
    context = contextvars.copy_context()

    def work() -> None:
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at the same priority
            log.debug("generation thread keeps its priority: %s", exc)
        try:
            import torch

            torch.set_num_threads(threads or generation_threads())
            out["value"] = context.run(fn)
        except BaseException as exc:  # handed to the caller
            out["error"] = exc

    t = threading.Thread(target=work, name="clipsae-generation", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]
