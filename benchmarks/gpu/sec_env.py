"""The machine: versions, what is missing, and the two ceilings (copy bandwidth, bf16 matmul)."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from common import Ctx, timed

PACKAGES = (
    "triton",
    "diffusers",
    "transformers",
    "open_clip_torch",
    "faiss-cpu",
    "eai-sparsify",
    "numpy",
    "scipy",
    "safetensors",
)


def run(ctx: Ctx) -> None:
    import torch

    ctx.rec("torch", torch.__version__)
    ctx.rec("cuda", torch.version.cuda if torch.cuda.is_available() else "not available")
    ctx.rec("device name", torch.cuda.get_device_name() if ctx.cuda else f"CPU ({platform.machine()})")
    ctx.rec("cpu cores", os.cpu_count())
    ctx.rec("load average", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    ctx.rec("python", platform.python_version())
    for pkg in PACKAGES:
        try:
            version = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        ctx.rec(
            {"open_clip_torch": "open_clip", "faiss-cpu": "faiss", "eai-sparsify": "sparsify"}.get(pkg, pkg), version
        )
    if not ctx.cuda:
        ctx.skip("ceilings", "no CUDA device")
        return
    props = torch.cuda.get_device_properties(0)
    ctx.rec("gpu memory", round(props.total_memory / 2**30, 1), "GiB", f"{props.multi_processor_count} SMs")
    n = 1 << 30  # 2 GiB of fp16 each way
    a = torch.empty(n, dtype=torch.float16, device="cuda").normal_()
    b = torch.empty_like(a)
    t, _, _ = timed(lambda: b.copy_(a), ctx.device, repeats=10, warmup=3)
    ctx.rec("device-to-device copy", round(2 * a.numel() * 2 / t / 1e12, 2), "TB/s", "bytes read + written")
    m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    t, _, _ = timed(lambda: m @ m, ctx.device, repeats=10, warmup=3)
    ctx.rec("bf16 matmul 8192³", round(2 * 8192**3 / t / 1e12, 1), "TFLOP/s", "random data")
    m32 = m.float()
    t, _, _ = timed(lambda: m32 @ m32, ctx.device, repeats=5, warmup=2)
    ctx.rec(
        "fp32 matmul 8192³ (default precision)",
        round(2 * 8192**3 / t / 1e12, 1),
        "TFLOP/s",
        f"torch.get_float32_matmul_precision() = {torch.get_float32_matmul_precision()}",
    )
