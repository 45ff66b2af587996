"""The device benchmark: steering, training, atlas and embedding at full size, one command.

    bash benchmarks/gpu/run.sh                      # on the GPU machine: everything, <= 8 min
    bash benchmarks/gpu/run.sh --smoke              # tiny components on the CPU (the suite runs this)
    bash benchmarks/gpu/run.sh --only train,atlas   # some sections

Each section runs in a forked child with its own time budget (a section that overruns is
killed and says so; the next one starts), under one deadline for the whole run. Rows are
written as they are measured (`rows.jsonl`), and `results.md` / `results.json` are
rewritten after every section, so a run killed at any point still leaves what finished.
What cannot run here (no CUDA, no Triton, a package missing) is one row saying so.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROWS, Ctx  # noqa: E402
from report import write_report  # noqa: E402

# name: (module, seconds on the device, seconds in --smoke); in run order: the most wanted
# numbers first, torch.compile (the likeliest to overrun) last.
SECTIONS: dict[str, tuple[str, float, float]] = {
    "env": ("sec_env", 20, 30),
    "kandinsky": ("sec_kandinsky", 165, 60),
    "train": ("sec_train", 95, 60),
    "atlas": ("sec_atlas", 60, 60),
    "embed": ("sec_embed", 40, 60),
    "profile": ("sec_profile", 30, 60),
    "compile": ("sec_compile", 110, 30),
}


def _child(name: str, module: str, ctx: Ctx) -> None:
    """A section in a forked child: any exception is a row, never the end of the run."""
    try:
        importlib.import_module(module).run(ctx)
    except Exception as exc:  # noqa: BLE001 - one failed section must not stop the others
        ctx.rec("section failed", f"{type(exc).__name__}: {exc}"[:500], note=traceback.format_exc(limit=3)[-800:])
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)


def run_section(name: str, ctx: Ctx, budget: float) -> str:
    """Run one section under `budget` seconds; its status line."""
    module = SECTIONS[name][0]
    proc = mp.get_context("fork").Process(target=_child, args=(name, module, ctx), name=name)
    t0 = time.monotonic()
    proc.start()
    proc.join(budget)
    seconds = time.monotonic() - t0
    if proc.is_alive():
        proc.kill()
        proc.join(10)
        status = f"killed at its budget of {budget:.0f} s (rows above are what it finished)"
    elif proc.exitcode == 0:
        status = "ok"
    else:
        status = f"failed (exit {proc.exitcode})"
    ctx.rec("section status", status, note=f"{seconds:.1f} s wall", seconds=round(seconds, 2))
    return status


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny components on the CPU, well under two minutes")
    p.add_argument("--out", default=os.environ.get("OUT") or "bench_out/gpu", help="results folder (default: $OUT)")
    p.add_argument("--work", default=None, help="scratch folder for models and data (default: a temporary one)")
    p.add_argument("--only", default="", help="comma-separated sections (default: all): " + ",".join(SECTIONS))
    p.add_argument("--skip", default="", help="comma-separated sections to leave out")
    p.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds for the whole run (default: 470 on the device, 110 with --smoke)",
    )
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available; cpu with --smoke)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    import tempfile

    import torch  # imported once here: every forked section shares it (no CUDA is initialised here)

    names = [n for n in (a.only.split(",") if a.only else SECTIONS) if n]
    unknown = [n for n in names + [n for n in a.skip.split(",") if n] if n not in SECTIONS]
    if unknown:
        print(f"bench_gpu: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    names = [n for n in names if n not in set(a.skip.split(","))]
    device = a.device or ("cpu" if a.smoke or not torch.cuda.is_available() else "cuda")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ROWS).unlink(missing_ok=True)
    deadline = time.monotonic() + (a.deadline or (110 if a.smoke else 470))
    meta = {
        "smoke": a.smoke,
        "device": device,
        "sections": names,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "argv": sys.argv[1:],
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    with tempfile.TemporaryDirectory(prefix="clipsae-gpu-") as tmp:
        work = Path(a.work or tmp)
        for name in names:
            left = deadline - time.monotonic()
            ctx = Ctx(section=name, out=out, work=work / name, device=device, smoke=a.smoke)
            budget = min(SECTIONS[name][2 if a.smoke else 1], left)
            if budget < 5:
                ctx.rec("section status", "not run: the run's deadline was reached")
                continue
            ctx.work.mkdir(parents=True, exist_ok=True)
            ctx.deadline = time.monotonic() + budget
            print(f"== {name} (budget {budget:.0f} s)", flush=True)
            run_section(name, ctx, budget)
            write_report(out, meta)
    write_report(out, meta)
    print(f"results: {out / 'results.md'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
