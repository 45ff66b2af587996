"""The device benchmark cannot rot: `benchmarks/gpu/run.sh --smoke` runs every section on the
CPU with tiny components (the GPU-only parts say why they were skipped), every module of it
compiles and imports, the published Kandinsky configs build modules of the published sizes,
and a section that overruns its budget is killed and reported while the run goes on."""

from __future__ import annotations

import importlib
import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "benchmarks" / "gpu"
sys.path.insert(0, str(GPU))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gpu_smoke")
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        ["bash", str(GPU / "run.sh"), "--smoke", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def _rows(results: dict, section: str) -> dict:
    return {r["name"]: r["value"] for r in results["sections"][section]}


def test_smoke_runs_every_section(smoke):
    out, results = smoke
    assert set(results["sections"]) == {"env", "kandinsky", "train", "atlas", "embed", "profile", "compile"}
    for section, rows in results["sections"].items():
        assert _rows(results, section)["section status"] == "ok", (section, rows)
    k = _rows(results, "kandinsky")
    assert k["identity edit bit-exact (fp32)"] is True
    for name in (
        "decoder fp32 64px 2 steps",
        "slider move fp32 64px 2 steps",
        "full generate fp32 64px 2 steps",
        "prior fp32 2 steps",
        "decoder fp32 64px 2 steps, eager attention",
    ):
        assert isinstance(k[name], float) and k[name] > 0, name
    moves = {r["name"]: r["note"] for r in results["sections"]["kandinsky"]}
    assert "calls +0/+1" in moves["slider move fp32 64px 2 steps"]  # decoder only: the start is cached
    assert "calls +1/+2" in moves["full generate fp32 64px 2 steps"]
    assert _rows(results, "train")["wide: clipsae (loop)"] > 0
    a = _rows(results, "atlas")
    assert all(isinstance(a[n], float) for n in ("atlas A (256 x 600)", "atlas B (512 x 600)", "link A B"))
    assert _rows(results, "embed")["embed ViT-B-32: clipsae embed pipeline"] > 0
    p = _rows(results, "profile")
    assert p["train: syncs per step"] >= 0 and p["atlas: syncs per block"] >= 0
    assert _rows(results, "compile")["compiled decoder"] == "skipped"
    md = (out / "results.md").read_text()
    assert "## Goals" in md and "## kandinsky" in md and (out / "profile_train.txt").exists()


def test_every_gpu_module_compiles_and_imports():
    for path in sorted(GPU.glob("*.py")):
        py_compile.compile(str(path), doraise=True)
        if path.stem != "sparsify_loop":  # a script: it trains when imported
            importlib.import_module(path.stem)


def test_published_configs_build_the_published_sizes():
    from kandinsky_full import parameter_counts

    n = parameter_counts()  # on the meta device: shapes only
    assert abs(n["prior"] - 1.0e9) / 1.0e9 < 0.05
    assert n["unet"] == 1_253_057_288  # the published 5.01 GB float32 weights file holds 1.2525e9 (card: "1.22B")
    assert abs(n["movq"] - 67e6) / 67e6 < 0.02
    assert abs(n["image_encoder"] - 1.845e9) / 1.845e9 < 0.01  # ViT-bigG/14's image tower
    assert abs(n["text_encoder"] - 694.7e6) / 694.7e6 < 0.01


def test_a_section_over_its_budget_is_killed_and_the_run_goes_on(tmp_path, monkeypatch):
    import bench_gpu
    from common import Ctx

    (tmp_path / "sleepy_section.py").write_text(
        "import time\ndef run(ctx):\n    ctx.rec('started', 1)\n    time.sleep(60)\n    ctx.rec('never', 1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(bench_gpu.SECTIONS, "sleepy", ("sleepy_section", 1, 1))
    ctx = Ctx(section="sleepy", out=tmp_path, work=tmp_path, device="cpu", smoke=True)
    assert bench_gpu.run_section("sleepy", ctx, budget=1.5).startswith("killed at its budget")
    rows = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["started", "section status"]
