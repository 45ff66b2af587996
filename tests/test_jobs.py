"""The generation queue: one job at a time, sessions served round-robin (least recently
served first), a cancelled waiting job leaves at once, progress says how many are ahead."""

from __future__ import annotations

import threading
import time

import pytest

from app.jobs import Cancelled, FairQueue, Job, in_generation_thread


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
        _wait_for(
            lambda: job in [j for q in queue._waiting.values() for j in q] or queue.running is job,
            "the job never reached the queue",
        )
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


def _stepper(queue: FairQueue, job: Job, name: str, steps: int, log: list, hooks: dict, suspends: list | None = None):
    """A fake generation: `steps` steps, each logged as (name, i); hooks[(name, i)]() runs after
    step i, before its step boundary (where the job may be paused)."""

    def suspend():
        suspends.append(("suspend", name))
        return lambda restored: suspends.append(("resume" if restored else "abandon", name))

    def work():
        try:
            with queue.turn(job):
                for i in range(steps):
                    log.append((name, i))
                    hooks.get((name, i), lambda: None)()
                    job.step_boundary(suspend if suspends is not None else None)
        except Cancelled:
            log.append((name, "cancelled"))

    return threading.Thread(target=work)


def _queued(queue: FairQueue, job: Job) -> None:
    """Wait (bounded) until `job` waits in the queue."""
    deadline = time.time() + 120
    while job not in [j for q in queue._waiting.values() for j in q]:
        assert time.time() < deadline, "the job never reached the queue"
        time.sleep(0.005)


def test_a_short_job_of_another_session_runs_at_the_long_ones_next_step():
    queue, log, hooks, suspends = FairQueue(poll_s=0.01), [], {}, []
    long, short = Job(session="a"), Job(session="b")
    t_short = _stepper(queue, short, "short", 2, log, hooks)

    def submit_short():  # arrives while step 3 of the long job is under way
        t_short.start()
        _queued(queue, short)

    hooks[("long", 3)] = submit_short
    t_long = _stepper(queue, long, "long", 8, log, hooks, suspends)
    t_long.start()
    for t in (t_long, t_short):
        t.join(10)
    assert log == [("long", i) for i in range(4)] + [("short", 0), ("short", 1)] + [("long", i) for i in range(4, 8)]
    assert suspends == [("suspend", "long"), ("resume", "long")]  # state saved before, restored after
    assert queue.running is None and not queue._waiting


def test_a_paused_job_is_not_preempted_back_and_a_third_session_comes_before_it():
    queue, log, hooks = FairQueue(poll_s=0.01), [], {}
    a, b, c, a2 = Job(session="a"), Job(session="b"), Job(session="c"), Job(session="a")
    threads = {n: _stepper(queue, j, n, 3, log, hooks) for n, j in [("b", b), ("c", c), ("a2", a2)]}

    def submit(*names):
        def go():
            for n in names:
                threads[n].start()
                _queued(queue, {"b": b, "c": c, "a2": a2}[n])

        return go

    hooks[("a", 0)] = submit("b", "a2")  # b preempts a; a's own second job never does
    hooks[("b", 1)] = submit("c")  # c (new, another session) preempts b; paused a does not
    t_a = _stepper(queue, a, "a", 3, log, hooks)
    t_a.start()
    for t in (t_a, *threads.values()):
        t.join(10)
    assert log == [
        ("a", 0),
        ("b", 0),
        ("b", 1),
        ("c", 0),
        ("c", 1),
        ("c", 2),
        ("a", 1),
        ("a", 2),
        ("b", 2),
        ("a2", 0),
        ("a2", 1),
        ("a2", 2),
    ]


def test_a_job_cancelled_while_paused_leaves_and_gives_its_state_up():
    queue, log, hooks, suspends = FairQueue(poll_s=0.01), [], {}, []
    long, short = Job(session="a"), Job(session="b")
    t_short = _stepper(queue, short, "short", 3, log, hooks)

    def submit_short():
        t_short.start()
        _queued(queue, short)

    hooks[("long", 0)] = submit_short
    hooks[("short", 0)] = long.cancel  # Stop pressed on the paused job
    t_long = _stepper(queue, long, "long", 5, log, hooks, suspends)
    t_long.start()
    for t in (t_long, t_short):
        t.join(10)
    assert ("long", "cancelled") in log and [e for e in log if e[0] == "short"] == [("short", i) for i in range(3)]
    assert ("long", 1) not in log
    assert suspends == [("suspend", "long"), ("abandon", "long")]
    assert queue.running is None and not queue._waiting


def test_a_job_without_a_turn_never_pauses():
    job = Job(session="a")
    job.step_boundary(lambda: pytest.fail("suspended outside a turn"))
    job.cancel()
    with pytest.raises(Cancelled):
        job.step_boundary()


def test_generation_threads_run_at_lower_priority_with_fewer_torch_threads():
    import os

    import torch

    from app.jobs import generation_threads

    def inside():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), torch.get_num_threads()

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    threads_before = torch.get_num_threads()
    nice, threads = in_generation_thread(inside, nice=3, threads=1)
    assert nice == min(19, mine + 3) and threads == 1
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller keeps its own
    assert torch.get_num_threads() == threads_before
    assert generation_threads(16) == 8 and generation_threads(1) == 1
    with pytest.raises(Cancelled):
        in_generation_thread(_raise_cancelled)


def _raise_cancelled():
    raise Cancelled("stopped inside")


def test_the_generation_thread_sees_the_callers_context_variables():
    """Gradio's progress reports find their event through context variables: the generation
    thread must run in the caller's context, or a job's step lines never reach its page."""
    import contextvars

    var = contextvars.ContextVar("event", default=None)
    var.set("event-7")
    assert in_generation_thread(var.get, nice=0, threads=1) == "event-7"
