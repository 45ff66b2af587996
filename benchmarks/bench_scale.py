"""Research scale: seed 000's dictionary sizes end to end, and latent pages at 1M images.

    .venv/bin/python benchmarks/bench_scale.py                      # everything (~45 min on 2 cores, ~6 GiB peak)
    .venv/bin/python benchmarks/bench_scale.py --parts atlas,link   # build + link only
    .venv/bin/python benchmarks/bench_scale.py --parts pages --page-images 1000000

Synthetic embeddings shaped like seed 000 over 32,000 images: A = 98,304 latents on 512-d
inputs (CLIP), B = 163,840 latents on 1280-d inputs (Kandinsky prior), random ReLU SAEs
whose biases leave ~64 latents firing per image. Rows:
- atlas: `clipsae atlas` on each (time, peak RSS), each in its own process, with and
  without the exact nearest-latent table (`--neighbours 0`);
- link: `clipsae link A B` (sparse co-activation; one process, then 2 torchrun ranks) and
  the ETA of the dense method it
  replaced (encode both SAEs and a float64 [chunk, F_B] cross product for every chunk of
  A's latents), timed on two blocks and extrapolated as its progress bar did;
- pages: a synthetic atlas of 163,840 latents over `--page-images` images (arrays written
  directly, real JPEG thumbnails), served by `clipsae serve` in its own process with the
  seed-size B atlas as steering atlas (tiny Kandinsky): start-up time, RSS, and through
  gradio_client the latent page p50/p95 vs a trivial call, the latent list and a label
  search; then a profile of one page in this process.
Prints Markdown tables; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))
from bench_load import free_port, peak_rss_gib, wait_ready  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False"}


def make_inputs(folder: Path, n: int, d: int, f: int, l0: int, seed: int) -> None:
    """x.npy [n, d] float16 ~ N(0, I) and a ReLU SAE with unit encoder columns whose bias
    lets ~l0 latents fire per row (P(N(0,1) > z) = l0 / f)."""
    from scipy.stats import norm

    from sae_core.config import SAEConfig
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float16, shape=(n, d))
    for lo in range(0, n, 8192):
        x[lo : lo + 8192] = rng.normal(size=(min(8192, n - lo), d)).astype(np.float16)
    x.flush()
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=f), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_enc.fill_(-float(norm.isf(l0 / f)))
    save_sae(sae, folder / "sae")


def child(argv: list[str]) -> dict:
    """Run a command in its own process: its wall time and its own peak RSS (wait4)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            return {"error": (err.read().decode(errors="replace").strip().splitlines() or ["?"])[-1]}
    return {"seconds": seconds, "peak_gib": usage.ru_maxrss / 2**20}


def clipsae(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def dense_link_eta(a: Path, b: Path, budget_mb: float = 1024, block: int = 4096, timed_blocks: int = 2) -> float:
    """Seconds the dense link (before this round) would take: per chunk of A's latents, every
    block of images re-encoded by both SAEs and a float64 [chunk, F_B] cross product."""
    from sae_core.io import load_sae

    sa, sb = load_sae(a / "sae"), load_sae(b / "sae")
    xa, xb = np.load(a / "x.npy", mmap_mode="r"), np.load(b / "x.npy", mmap_mode="r")
    n, fa, fb = xa.shape[0], sa.cfg.d_sae, sb.cfg.d_sae
    chunk = max(1, min(fa, int(budget_mb * 2**20) // (8 * fb)))
    sab = torch.zeros(chunk, fb, dtype=torch.float64)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i0 in range(0, timed_blocks * block, block):
            fa_ = sa.encode(torch.from_numpy(np.asarray(xa[i0 : i0 + block], dtype=np.float32))).double()[:, :chunk]
            fb_ = sb.encode(torch.from_numpy(np.asarray(xb[i0 : i0 + block], dtype=np.float32))).double()
            sab += fa_.T @ fb_
    per_block = (time.perf_counter() - t0) / timed_blocks
    return per_block * -(-n // block) * -(-fa // chunk)


def run_atlas_and_link(root: Path, a: Path, b: Path, n: int) -> list[tuple[str, str, str]]:
    rows = []
    for name, folder in (("A", a), ("B", b)):
        f = json.loads((folder / "sae/cfg.json").read_text())["d_sae"]
        for extra, out, what in (
            ((), "atlas", "with the neighbour table (default)"),
            (("--neighbours", "0"), "atlas_no_neighbours", "`--neighbours 0`"),
        ):
            r = child(
                clipsae(
                    "atlas",
                    "--acts",
                    str(folder / "x.npy"),
                    "--sae",
                    str(folder / "sae"),
                    "--out",
                    str(folder / out),
                    "--device",
                    "cpu",
                    *extra,
                )
            )
            rows.append((f"`clipsae atlas` {name}: {f} latents, {n} images, {what}", *_fmt(r)))
    r = child(clipsae("link", str(a / "atlas"), str(b / "atlas"), "--device", "cpu"))
    rows.append(("`clipsae link` A B: sparse co-activation (exact)", *_fmt(r)))
    r = child(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "precompute.link",
            str(a / "atlas"),
            str(b / "atlas"),
            "--device",
            "cpu",
        ]
    )
    rows.append(("the same under `torchrun --nproc_per_node=2 -m precompute.link` (gloo)", *_fmt(r)))
    eta = dense_link_eta(a, b)
    rows.append(("dense link (before): ETA from 2 timed blocks", f"{eta:,.0f} ({eta / 3600:.1f} h)", "—"))
    return rows


def _fmt(r: dict) -> tuple[str, str]:
    if "error" in r:
        return f"failed: {r['error']}", "—"
    return f"{r['seconds']:.1f}", f"{r['peak_gib']:.2f}"


def write_photos(folder: Path, n: int = 2000) -> list[str]:
    """n JPEGs of 320×240: crops of the photos bundled with scikit-image / scikit-learn."""
    from PIL import Image

    from app.demo import bundled_photos

    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(p).convert("RGB") for p in bundled_photos()]
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        x0, y0 = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
        im.crop((x0, y0, x0 + 2 * w // 3, y0 + 2 * h // 3)).resize((320, 240)).save(
            folder / f"p{i:04d}.jpg", quality=85
        )
        names.append(f"p{i:04d}.jpg")
    return names


def synthetic_atlas(out: Path, photos: Path, f: int, n_images: int, d: int, k: int = 16, l0: int = 64) -> None:
    """An atlas of f latents over n_images images written directly (no build): every declared
    array with its dtype and shape, codes with l0 entries per image, labels from the bundled
    vocabulary, masks, a random SAE and its latent index; image paths cycle over real photos."""
    from precompute.atlas_format import ATLAS_ARRAYS, ATLAS_FORMAT, ATLAS_VERSION, LABEL_VOCAB, MANIFEST, sae_hash
    from precompute.atlas_write import _files
    from precompute.indexes import latent_index
    from precompute.labels import read_vocab
    from sae_core.config import SAEConfig
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = sorted(p.name for p in photos.iterdir())
    with open(out / "images.jsonl", "w") as fh:
        for i in range(n_images):
            fh.write(json.dumps({"id": f"{i:07d}#000000000000", "path": names[i % len(names)]}) + "\n")
    vocab = read_vocab()
    top = np.sort(rng.random((f, k), dtype=np.float32), axis=1)[:, ::-1] * 3
    freq = (rng.random(f) * 2 * l0 / f).astype(np.float32)
    arrays = {
        "topk_ids.npy": rng.integers(0, n_images, (f, k)),
        "topk_values.npy": np.ascontiguousarray(top),
        "frequency.npy": freq,
        "mean_activation.npy": top.mean(1),
        "max_activation.npy": top[:, 0].copy(),
        "histogram.npy": rng.integers(0, 50, (f, 50)),
        "band_ids.npy": rng.integers(0, n_images, (f, 5, 4)),
        "band_values.npy": rng.random((f, 5, 4), dtype=np.float32),
        "masks.npy": rng.random((f, k, 49), dtype=np.float32).astype(np.float16),
        "mask_scale.npy": np.ones(f, np.float32),
        "label_words.npy": rng.integers(0, len(vocab), (f, 5), dtype=np.int32),
        "label_scores.npy": rng.random((f, 5), dtype=np.float32),
        "neighbour_ids.npy": rng.integers(0, f, (f, 8)),
        "neighbour_cos.npy": np.sort(rng.random((f, 8), dtype=np.float32), axis=1)[:, ::-1],
    }
    np.save(out / "codes_indptr.npy", np.arange(0, (n_images + 1) * l0, l0, dtype=np.int64))
    for name, dtype, gen in (
        ("codes_latents.npy", np.int32, lambda m: rng.integers(0, f, m, dtype=np.int32)),
        ("codes_values.npy", np.float32, lambda m: rng.random(m, dtype=np.float32)),
    ):
        arr = np.lib.format.open_memmap(out / name, mode="w+", dtype=dtype, shape=(n_images * l0,))
        for lo in range(0, len(arr), 1 << 24):
            arr[lo : lo + (1 << 24)] = gen(min(1 << 24, len(arr) - lo))
        arr.flush()
        del arr
    manifest = {
        "d_sae": f,
        "top_images": k,
        "n_patches": 49,
        "n_images": n_images,
        "n_codes": n_images * l0,
        "neighbours": 8,
    }
    for field in ATLAS_ARRAYS:
        if field.name in arrays:
            arr = arrays[field.name].astype(field.dtype)
            field.check(arr, manifest)
            np.save(out / field.name, arr)
    (out / LABEL_VOCAB).write_text(json.dumps(vocab))
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=f), generator=torch.Generator().manual_seed(1))
    latent_index(sae).write(out / "latents.faiss")
    save_sae(sae, out / "sae")
    manifest.update(
        {
            "format": ATLAS_FORMAT,
            "format_version": ATLAS_VERSION,
            "config": {"synthetic": True},
            "sae_sha256": sae_hash(out / "sae"),
            "cache_sha256": "synthetic",
            "d_in": d,
            "architecture": "relu",
            "score_rule": "single row per image",
            "stats_images": n_images,
            "n_dead": 0,
            "model_name": None,
            "pretrained": None,
            "random_weights": False,
            "hook_name": None,
            "encoder": False,
            "images_root": str(photos.resolve()),
            "images_root_relative": None,
            "has_images": True,
            "masks": True,
            "labels": True,
            "image_index": False,
            "notes": ["synthetic (benchmarks/bench_scale.py)"],
        }
    )
    manifest["files"] = _files(out)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))


def p50_p95(ts: list[float]) -> str:
    return f"{np.median(ts) * 1000:.0f} / {np.percentile(ts, 95) * 1000:.0f}"


def start_server(big: Path, steer: Path | None) -> tuple[subprocess.Popen, str, float]:
    """`clipsae serve` in a child process: (process, url, seconds to the first HTTP 200)."""
    port = free_port()
    extra = ["--steer-atlas", str(steer), "--tiny-kandinsky"] if steer else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        clipsae("serve", "--atlas", str(big), *extra, "--device", "cpu", "--port", str(port)),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    wait_ready(url, proc)
    return proc, url, time.perf_counter() - t0


def run_pages(big: Path, steer: Path, n_pages: int = 200) -> list[tuple[str, str]]:
    """Serve `big` (+ `steer`) in a child process; start-up, RSS and latencies via gradio_client."""
    from gradio_client import Client

    alone, _, seconds = start_server(big, None)
    rows = [
        ("start-up, `clipsae serve --atlas BIG` alone, to the first HTTP 200 (s)", f"{seconds:.1f}"),
        ("its RSS after start-up (GiB)", f"{rss_gib(alone.pid):.2f}"),
    ]
    alone.terminate()
    alone.wait(timeout=30)
    proc, url, seconds = start_server(big, steer)
    rows.append(("start-up with `--steer-atlas B --tiny-kandinsky` (s)", f"{seconds:.1f}"))
    try:
        client = Client(url, verbose=False, download_files=False)
        f = json.loads((big / "manifest.json").read_text())["d_sae"]
        rng = np.random.default_rng(0)
        timed = {
            "trivial call (label search 'zzz')": [],
            "latent page": [],
            "latent list (50 most frequent)": [],
            "label search 'dog'": [],
        }
        for _ in range(20):  # warm-up: first renders of a few pages, connection set-up
            client.predict(int(rng.integers(f)), api_name="/latent_page")
        for lat in rng.integers(0, f, n_pages):
            for name, args, api in (
                ("trivial call (label search 'zzz')", ("zzz",), "/search"),
                ("latent page", (int(lat),), "/latent_page"),
            ):
                t = time.perf_counter()
                client.predict(*args, api_name=api)
                timed[name].append(time.perf_counter() - t)
        for name, api, value in (
            ("direct HTTP, latent page (server time, first views)", "latent_page", None),
            ("direct HTTP, trivial call", "search", "zzz"),
        ):
            timed[name] = []
            for lat in rng.integers(0, f, 100):
                body = json.dumps({"data": [int(lat) if value is None else value, big.name]}).encode()  # (…, sae)
                req = urllib.request.Request(
                    f"{url}gradio_api/run/{api}", data=body, headers={"Content-Type": "application/json"}
                )
                t = time.perf_counter()
                urllib.request.urlopen(req).read()
                timed[name].append(time.perf_counter() - t)
        for name, text in (("latent list (50 most frequent)", ""), ("label search 'dog'", "dog")):
            for _ in range(20):
                t = time.perf_counter()
                client.predict(text, api_name="/search")
                timed[name].append(time.perf_counter() - t)
        for name, ts in timed.items():
            via = "" if name.startswith("direct") else ", gradio_client"
            rows.append((f"{name}{via} p50 / p95 (ms)", p50_p95(ts)))
        page, trivial = np.median(timed["latent page"]), np.median(timed["trivial call (label search 'zzz')"])
        rows.append(("latent page p50 / trivial call p50", f"{page / trivial:.2f}×"))
        rows.append(
            ("server RSS after the pages / peak (GiB)", f"{rss_gib(proc.pid):.2f} / {peak_rss_gib(proc.pid):.2f}")
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


def rss_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def profile_page(big: Path) -> str:
    """cProfile of 20 latent pages in this process (Handlers.latent_page, first renders included)."""
    import cProfile
    import io
    import pstats

    from app.atlas import Atlas
    from app.handlers import Handlers

    t0 = time.perf_counter()
    h = Handlers(Atlas(big))
    opened = time.perf_counter() - t0
    prof = cProfile.Profile()
    rng = np.random.default_rng(1)
    prof.enable()
    for lat in rng.integers(0, h.atlas.n_latents, 20):
        h.latent_page(int(lat))
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumtime").print_stats(12)
    return f"Atlas + Handlers opened in {opened:.2f} s\n" + out.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=32_000, help="images of the seed-size atlases")
    p.add_argument("--fa", type=int, default=98_304)
    p.add_argument("--da", type=int, default=512)
    p.add_argument("--fb", type=int, default=163_840)
    p.add_argument("--db", type=int, default=1280)
    p.add_argument("--l0", type=int, default=64, help="latents firing per image")
    p.add_argument("--page-images", type=int, default=1_000_000)
    p.add_argument("--parts", default="atlas,link,pages")
    p.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    a = p.parse_args()
    parts = set(a.parts.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.keep or tmp)
        ra, rb = root / "A", root / "B"
        for folder, d, f, seed in ((ra, a.da, a.fa, 1), (rb, a.db, a.fb, 2)):
            if not (folder / "sae").exists():
                make_inputs(folder, a.n, d, f, a.l0, seed)
        print(
            f"{torch.get_num_threads()} threads, no GPU (none was lent); n={a.n}, ~{a.l0} latents per image\n",
            flush=True,
        )
        if parts & {"atlas", "link"}:
            rows = run_atlas_and_link(root, ra, rb, a.n)
            print("| step | seconds | peak RSS (GiB) |\n|---|---|---|")
            for row in rows:
                print("| " + " | ".join(row) + " |", flush=True)
        if "pages" in parts:
            if not (rb / "atlas/manifest.json").exists():
                child(
                    clipsae(
                        "atlas",
                        "--acts",
                        str(rb / "x.npy"),
                        "--sae",
                        str(rb / "sae"),
                        "--out",
                        str(rb / "atlas"),
                        "--device",
                        "cpu",
                    )
                )
            big = root / f"big_{a.fb}_{a.page_images}"
            if not (big / "manifest.json").exists():
                photos = root / "photos"
                if not photos.exists():
                    write_photos(photos)
                synthetic_atlas(big, photos, a.fb, a.page_images, a.db)
            print(f"\nPages: {a.fb} latents over {a.page_images:,} images (+ steering atlas {a.fb} latents)\n")
            print("| measure | value |\n|---|---|")
            for row in run_pages(big, rb / "atlas"):
                print("| " + " | ".join(row) + " |", flush=True)
            print("\n" + profile_page(big))


if __name__ == "__main__":
    main()
