"""Preemption with the real (tiny) Kandinsky pipelines: a generation paused at a step
boundary for another session's job, which runs a different number of steps on the same
pipeline objects (so the scheduler's state must be saved and put back), still makes exactly the image it makes alone; so does
the job that went in between."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from app.jobs import Job
from app.kandinsky import TINY_DIM, make_tiny_pipelines
from app.steer import Steerer
from sae_core.config import SAEConfig
from sae_core.sae import SparseAutoencoder


def test_a_preempted_generation_makes_the_image_it_makes_alone():
    sae = SparseAutoencoder(SAEConfig(d_in=TINY_DIM, d_sae=32), generator=torch.Generator().manual_seed(0)).eval()
    s = Steerer(make_tiny_pipelines(seed=0), sae)
    x, neg = s.prior_embeds("a red horse", seed=3, steps=2)
    y, neg2 = s.prior_embeds("a blue boat", seed=4, steps=2)
    alone_a = np.asarray(s.decode(x, neg, seed=3, steps=5, size=64))
    alone_b = np.asarray(s.decode(y, neg2, seed=5, steps=3, size=64))
    out, texts = {}, []

    def run_b():
        with s.queue.turn(job_b):
            out["b"] = np.asarray(s.decode(y, neg2, seed=5, steps=3, size=64, job=job_b))

    t_b = threading.Thread(target=run_b)

    def report_a(fraction, text):
        texts.append(("a", text))
        if text == "decoder: step 2/5":  # b arrives while a's loop runs
            t_b.start()
            deadline = time.time() + 120
            while job_b not in [j for q in s.queue._waiting.values() for j in q]:
                assert time.time() < deadline
                time.sleep(0.005)

    job_a = Job(session="a", report=report_a)
    job_b = Job(session="b", report=lambda f, text: texts.append(("b", text)))
    with s.queue.turn(job_a):
        out["a"] = np.asarray(s.decode(x, neg, seed=3, steps=5, size=64, job=job_a))
    t_b.join(60)
    steps = [who + text.rsplit(" ", 1)[-1] for who, text in texts if "step" in text]
    assert steps == ["a1/5", "a2/5", "b1/3", "b2/3", "b3/3"] + [f"a{i}/5" for i in range(3, 6)]  # b ran inside a
    assert np.array_equal(out["a"], alone_a) and np.array_equal(out["b"], alone_b)
