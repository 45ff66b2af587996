"""The generation queue: one job at a time, sessions served round-robin (least recently
served first), a cancelled waiting job leaves at once, progress says how many are ahead."""

from __future__ import annotations

import threading
import time

import pytest

from app.jobs import Cancelled, FairQueue, Job


def _wait_for(condition, what: str, guard_s: float = 120.0) -> None:
    """Poll until `condition()` holds; `guard_s` only turns a hang into a failure."""
    deadline = time.monotonic() + guard_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _run_in_threads(queue: FairQueue, jobs: list[Job], order: list, hold: threading.Event) -> list[threading.Thread]:
    """Start each job in its own thread, in list order, each waiting until it is queued;
    `order` receives each job as it runs (or "cancelled:<session>")."""
    threads = []
    for job in jobs:
        def work(job=job):
            try:
                with queue.turn(job):
                    order.append(job)
                    hold.wait(120)  # a failure guard: every test sets `hold`
            except Cancelled:
                order.append("cancelled:" + job.session)
        t = threading.Thread(target=work)
        t.start()
        threads.append(t)
        _wait_for(lambda: job in [j for q in queue._waiting.values() for j in q] or queue.running is job,
                  "the job never reached the queue")
    return threads


def test_sessions_take_turns_whatever_the_arrival_order():
    queue = FairQueue(poll_s=0.01)
    a = [Job("A") for _ in range(3)]
    b = Job("B")
    c = Job("C")
    order: list = []
    hold = threading.Event()
    threads = _run_in_threads(queue, [a[0], a[1], a[2], b, c], order, hold)
    # A1 runs; B and C (never served) go before A2 and A3
    assert [queue.ahead_of(j) for j in (b, c, a[1], a[2])] == [1, 2, 3, 4]
    hold.set()
    for t in threads:
        t.join(120)
    assert order == [a[0], b, c, a[1], a[2]]  # not A, A, A, B, C: the FIFO a single user could clog


def test_a_cancelled_waiting_job_leaves_the_queue_at_once():
    queue = FairQueue(poll_s=0.01)
    first, second, third = Job("A"), Job("B"), Job("C")
    order: list = []
    hold = threading.Event()
    threads = _run_in_threads(queue, [first, second, third], order, hold)
    second.cancel()
    threads[1].join(120)  # a failure guard; "at once" is: while the first job still runs
    assert not threads[1].is_alive() and order[-1] == "cancelled:B"
    assert queue.running is first and not hold.is_set()
    assert queue.ahead_of(third) == 1
    hold.set()
    for t in threads:
        t.join(120)
    assert order == [first, "cancelled:B", third]


def test_waiting_jobs_report_their_place():
    queue = FairQueue(poll_s=0.01)
    seen: list[str] = []
    hold = threading.Event()
    order: list = []
    first = Job("A")
    waiting = Job("B", report=lambda fraction, text: seen.append(text))
    threads = _run_in_threads(queue, [first, waiting], order, hold)
    _wait_for(lambda: seen, "the waiting job never reported")
    hold.set()
    for t in threads:
        t.join(120)
    assert seen and "1 generation(s) ahead of yours" in seen[0]


def test_check_raises_only_after_cancel():
    job = Job()
    job.check()
    job.cancel()
    with pytest.raises(Cancelled, match="stopped"):
        job.check()
