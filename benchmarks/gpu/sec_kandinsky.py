"""Kandinsky 2.2 at full size through the project's own loader and `Steerer`: per-image
latency of the decoder (512² and 768² at 12, 25, 50 steps) and of the prior, the slider move
(decoder only: the prior's output and the original are cached) and a full Generate, fp16 vs
bf16, SDPA vs eager attention, peak memory, and the identity edit bit-exact in fp16.
"""

from __future__ import annotations

import itertools
import statistics
import time

import numpy as np

from common import Ctx, PeakMemory, free_cuda, missing, timed

PROMPT = "a red horse on a beach at sunset"


def _parts(ctx: Ctx) -> dict:
    """What to measure: full size on the device, one tiny pass of every branch with --smoke."""
    if ctx.smoke:
        return {
            "sizes": [64],
            "steps": [1, 2],
            "prior_steps": [2],
            "move_steps": [2],
            "precisions": ["float32"],
            "repeats": 1,
            "d_sae": 256,
            "eager_at": (64, 2),
        }
    return {
        "sizes": [512, 768],
        "steps": [12, 25, 50],
        "prior_steps": [25, 12],
        "move_steps": [12, 16],
        "precisions": ["float16", "bfloat16"],
        "repeats": 3,
        "d_sae": 163_840,
        "eager_at": (512, 25),
    }


def build(ctx: Ctx):
    """The saved folders (full size from the configs, or the tiny pipelines) and their rows."""
    from kandinsky_full import MODEL_CARD, folder_gb, parameter_counts, save_full, save_tiny

    if not ctx.smoke:
        for name, n in parameter_counts().items():
            card = MODEL_CARD[name]
            ctx.rec(f"parameters: {name}", n, note=f"model card {card / 1e6:,.0f}M" if card else "")
    prior_dir, decoder_dir, secs = save_tiny(ctx.work) if ctx.smoke else save_full(ctx.work, ctx.device)
    free_cuda()
    ctx.rec("build random weights", round(secs["build"], 1), "s", "on the device" if ctx.cuda else "")
    ctx.rec(
        "save_pretrained (prior + decoder)",
        round(secs["save"], 1),
        "s",
        f"{folder_gb(prior_dir) + folder_gb(decoder_dir):.1f} GB",
    )
    return prior_dir, decoder_dir


def steering_sae(d_in: int, d_sae: int, device: str):
    import torch

    from sae_core.config import SAEConfig
    from sae_core.sae import SparseAutoencoder

    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=d_sae), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    return sae.to(device).eval()


def measure_precision(ctx: Ctx, prior_dir, decoder_dir, precision: str, parts: dict, first: bool) -> None:
    from app.kandinsky import KandinskyOptions, apply_options, load_pipelines
    from app.steer import Steerer

    p = precision.replace("bfloat16", "bf16").replace("float16", "fp16").replace("float32", "fp32")
    t0 = time.perf_counter()
    with PeakMemory(ctx.device) as mem:
        pipes = load_pipelines(
            str(prior_dir), str(decoder_dir), device=ctx.device, options=KandinskyOptions(precision=precision)
        )
    ctx.rec(f"load_pipelines {p}", round(time.perf_counter() - t0, 1), "s", f"weights on the device: {mem.gib} GiB")
    steerer = Steerer(pipes, steering_sae(pipes.embed_dim, parts["d_sae"], ctx.device), device=ctx.device)
    reps = parts["repeats"]
    seeds = itertools.count(1000)
    for steps in parts["prior_steps"]:  # a new seed each call: the cache must not answer
        t, _, (x, neg) = timed(lambda: steerer.prior_embeds(PROMPT, next(seeds), steps), ctx.device, reps)
        ctx.rec(f"prior {p} {steps} steps", round(t, 3), "s", "text encoder + prior, batch 1 with guidance")
    for size in parts["sizes"]:
        for steps in parts["steps"] if first or size == parts["sizes"][0] else [25]:
            if ctx.left() < 25 and not ctx.smoke:
                ctx.skip(f"decoder {p} {size}px {steps} steps", "the section's budget is nearly spent")
                continue
            with PeakMemory(ctx.device) as mem:
                t, _, _ = timed(
                    lambda: steerer.decode(x, neg, 0, steps, size), ctx.device, reps if size <= 512 or steps < 50 else 1
                )
            ctx.rec(
                f"decoder {p} {size}px {steps} steps",
                round(t, 3),
                "s",
                f"peak {mem.gib} GiB",
                per_step_ms=round(1000 * t / steps, 1),
            )
    latents = [i for i, _ in steerer.active_latents(x, n=8)]
    for steps in parts["move_steps"]:
        generate_rows(ctx, steerer, latents[0], parts["sizes"][0], steps, parts["prior_steps"][0], reps, p, seeds)
    if precision in ("float16", "float32") and first:
        identity_rows(ctx, steerer, latents, parts, p)
    if first:
        size, steps = parts["eager_at"]
        apply_options(pipes, KandinskyOptions(attention="eager"))
        t, _, _ = timed(lambda: steerer.decode(x, neg, 0, steps, size), ctx.device, reps)
        ctx.rec(
            f"decoder {p} {size}px {steps} steps, eager attention",
            round(t, 3),
            "s",
            "set_default_attn_processor (vs the SDPA row above)",
        )


def generate_rows(
    ctx: Ctx, steerer, latent: int, size: int, steps: int, prior_steps: int, reps: int, p: str, seeds
) -> None:
    """A full Generate (new seed: prior + original + steered) then a slider move (another
    multiplier, same start: the steered image alone), `reps` times; medians."""
    from app.steer import Edit

    full, move, calls = [], [], []
    for _ in range(reps):
        seed = next(seeds)
        for value, times in ((2.0, full), (3.0, move)):
            before = (steerer.prior_calls, steerer.decoder_calls)
            t, _, _ = timed(
                lambda: steerer.generate(
                    PROMPT,
                    [Edit(latent, "multiply", value)],
                    seed=seed,
                    steps=steps,
                    size=size,
                    prior_steps=prior_steps,
                ),
                ctx.device,
                1,
                warmup=0,
            )
            times.append(t)
            calls.append(f"+{steerer.prior_calls - before[0]}/+{steerer.decoder_calls - before[1]}")
    ctx.rec(
        f"full generate {p} {size}px {steps} steps",
        round(statistics.median(full), 3),
        "s",
        f"prior {prior_steps} steps + original + steered (prior/decoder calls {calls[0]})",
    )
    ctx.rec(
        f"slider move {p} {size}px {steps} steps",
        round(statistics.median(move), 3),
        "s",
        f"decoder only: the start and the original are cached (prior/decoder calls {calls[1]})",
    )


def identity_rows(ctx: Ctx, steerer, latents: list[int], parts: dict, p: str) -> None:
    """Multipliers of 1.0 on the active latents give back the unsteered image bit for bit."""
    from app.steer import Edit

    size, steps = parts["sizes"][0], parts["move_steps"][0]
    original, same = steerer.steer(PROMPT, [Edit(i, "multiply", 1.0) for i in latents], seed=7, steps=steps, size=size)
    _, changed = steerer.steer(PROMPT, [Edit(latents[0], "multiply", 40.0)], seed=7, steps=steps, size=size)
    exact = bool(np.array_equal(np.asarray(original), np.asarray(same)))
    differs = not np.array_equal(np.asarray(original), np.asarray(changed))
    ctx.rec(
        f"identity edit bit-exact ({p})",
        exact,
        note=f"{len(latents)} latents x1.0; a x40 edit changes the image: {differs}",
    )


def run(ctx: Ctx) -> None:
    gaps = missing("diffusers", "transformers")
    if gaps:
        ctx.skip("kandinsky", f"not installed: {', '.join(gaps)} (carry the wheels: benchmarks/gpu/wheels.sh)")
        return
    parts = _parts(ctx)
    prior_dir, decoder_dir = build(ctx)
    for i, precision in enumerate(parts["precisions"]):
        try:
            measure_precision(ctx, prior_dir, decoder_dir, precision, parts, first=i == 0)
            free_cuda()  # the pipelines went with measure_precision's frame
        except Exception as exc:  # noqa: BLE001 - a failed precision must not hide the other's rows
            if i == 0 and ctx.smoke:
                raise
            ctx.rec(f"{precision} failed", f"{type(exc).__name__}: {exc}"[:400])
            free_cuda()
