"""The decoder with `--compile-decoder` (torch.compile of the UNet, channels-last), fp16 at
512²: the first call's compile time, then the decoder, the slider move and the identity edit.
Last in the run: it is the part most likely to overrun its budget."""

from __future__ import annotations

import itertools
import time

from common import Ctx, PeakMemory, free_cuda, missing, timed


def run(ctx: Ctx) -> None:
    gaps = missing("diffusers", "transformers")
    if gaps:
        ctx.skip("compiled decoder", f"not installed: {', '.join(gaps)}")
        return
    if not ctx.cuda:
        ctx.skip(
            "compiled decoder",
            "CUDA only (compiling even the tiny UNet takes minutes on 2 cores); the code path is imported here",
        )
        return
    from app.kandinsky import KandinskyOptions, load_pipelines
    from kandinsky_full import save_full
    from sec_kandinsky import PROMPT, generate_rows, identity_rows, steering_sae

    from app.steer import Steerer

    saved = ctx.work.parent / "kandinsky"
    if not (saved / "decoder" / "model_index.json").exists():
        save_full(saved, ctx.device)
        free_cuda()
    pipes = load_pipelines(
        str(saved / "prior"),
        str(saved / "decoder"),
        device=ctx.device,
        options=KandinskyOptions(precision="float16", compile_decoder=True),
    )
    steerer = Steerer(pipes, steering_sae(pipes.embed_dim, 16_384, ctx.device), device=ctx.device)
    x, neg = steerer.prior_embeds(PROMPT, 0, 25)
    t0 = time.perf_counter()
    steerer.decode(x, neg, 0, 12, 512)
    ctx.rec(
        "first compiled decode fp16 512px 12 steps",
        round(time.perf_counter() - t0, 1),
        "s",
        "torch.compile's compilation included",
    )
    for steps in (12, 25):
        with PeakMemory(ctx.device) as mem:
            t, _, _ = timed(lambda: steerer.decode(x, neg, 0, steps, 512), ctx.device, 3)
        ctx.rec(
            f"compiled decoder fp16 512px {steps} steps",
            round(t, 3),
            "s",
            f"peak {mem.gib} GiB",
            per_step_ms=round(1000 * t / steps, 1),
        )
    latents = [i for i, _ in steerer.active_latents(x, n=8)]
    seeds = itertools.count(5000)
    generate_rows(ctx, steerer, latents[0], 512, 12, 25, 2, "fp16 compiled", seeds)
    identity_rows(ctx, steerer, latents, {"sizes": [512], "move_steps": [12]}, "fp16 compiled")
