"""The generation queue: one job at a time, sessions served round-robin (least recently
served first), a cancelled waiting job leaves at once, progress says how many are ahead."""

from __future__ import annotations

import threading
import time

import pytest

from app.jobs import Cancelled, FairQueue, Job


def _run_in_threads(queue: FairQueue, jobs: list[Job], order: list, hold: threading.Event) -> list[threading.Thread]:
    """Start each job in its own thread, in list order, each waiting until it is queued;
    `order` receives each job as it runs (or "cancelled:<session>")."""
    threads = []
    for job in jobs:
        def work(job=job):
            try:
                with queue.turn(job):
                    order.append(job)
                    hold.wait(5)
            except Cancelled:
                order.append("cancelled:" + job.session)
        t = threading.Thread(target=work)
        t.start()
        threads.append(t)
        deadline = time.time() + 5
        while job not in [j for q in queue._waiting.values() for j in q] and queue.running is not job:
            assert time.time() < deadline, "the job never reached the queue"
            time.sleep(0.01)
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
        t.join(10)
    assert order == [a[0], b, c, a[1], a[2]]  # not A, A, A, B, C: the FIFO a single user could clog


def test_a_cancelled_waiting_job_leaves_the_queue_at_once():
    queue = FairQueue(poll_s=0.01)
    first, second, third = Job("A"), Job("B"), Job("C")
    order: list = []
    hold = threading.Event()
    threads = _run_in_threads(queue, [first, second, third], order, hold)
    t0 = time.perf_counter()
    second.cancel()
    threads[1].join(5)
    assert time.perf_counter() - t0 < 1.0 and order[-1] == "cancelled:B"
    assert queue.ahead_of(third) == 1
    hold.set()
    for t in threads:
        t.join(10)
    assert order == [first, "cancelled:B", third]


def test_waiting_jobs_report_their_place():
    queue = FairQueue(poll_s=0.01)
    seen: list[str] = []
    hold = threading.Event()
    order: list = []
    first = Job("A")
    waiting = Job("B", report=lambda fraction, text: seen.append(text))
    threads = _run_in_threads(queue, [first, waiting], order, hold)
    time.sleep(0.05)
    hold.set()
    for t in threads:
        t.join(10)
    assert seen and "1 generation(s) ahead of yours" in seen[0]


def test_check_raises_only_after_cancel():
    job = Job()
    job.check()
    job.cancel()
    with pytest.raises(Cancelled, match="stopped"):
        job.check()
