"""Train one SAE, or several on the same batches (a λ, k or seed sweep), in one pass over the data.

    clipsae train --acts acts.npy --out saes/ --arch topk --d-sae 16384 --k 16,32,64
    clipsae train --acts acts.npy --out saes/ --arch topk --d-sae 16384 --k 16,32,64 --seed 0,1
    clipsae train --acts cache/ --out saes/ --arch relu --d-sae 4096 --l1 0.05,0.07,0.1 --epochs 5
    clipsae train --acts cache/ --out saes/ --arch matryoshka --d-sae 4096 --k 32 --groups 128,512,4096
    clipsae train ... --resume        # continue exactly from saes/checkpoint/

Batch size, learning rate, warm-ups and the resampling period are chosen from the data size
and the dictionary size unless given (`schedule.resolve`; the choice is logged and recorded).

Writes to --out: the SAE folder (one value) or one sub-folder per combination of the swept
values (`l1_0.001/`, `k_32/`, `k_32_seed_1/`), `train_config.json`, `train.log` (metric
lines) and, while running, `checkpoint/` (every `checkpoint_every` steps; removed after success,
`train_summary.json` stays).

Not handled here: activation extraction (`precompute`), evaluation beyond the SAE
metrics (`clipsae metrics`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path

import torch

from . import io
from .checkpoint import CHECKPOINT_DIR, load_checkpoint, save_checkpoint, with_defaults
from .config import SAEConfig, TrainConfig
from .data import ActivationSource, iter_batches, make_plan, sample_rows
from .device import resolve_device
from .errors import TrainingDiverged
from .files import atomic_write_dir, atomic_write_text
from .init import init_runs
from .progress import Progress
from .refit import BEFORE_REFIT_DIR, REFIT_ARCHS, refit_, too_large
from .schedule import resolve
from .sweep import RunSpec, sae_dir
from .trainer import SAETrainer

log = logging.getLogger(__name__)

SUMMARY_FILE = "train_summary.json"
LOG_FILE = "train.log"


def _attach_log_file(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("sae_core").addHandler(handler)
    logging.getLogger("sae_core").setLevel(logging.INFO)
    return handler


def train(
    acts: str | Path,
    out: str | Path,
    specs: list[RunSpec],
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    metadata: dict | None = None,
) -> list[Path]:
    """Train every spec on the same batches; return the SAE folders written."""
    out = Path(out)
    source = ActivationSource(acts)
    for spec in specs:
        if spec.cfg.d_in != source.d:
            raise ValueError(f"SAE d_in={spec.cfg.d_in} but the activations in {acts} have width {source.d}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep values give duplicate names: {names}")
    auto = cfg.unresolved()
    cfg, notes = resolve(cfg, source.n_rows, source.d, specs[0].cfg.d_sae, specs[0].cfg.architecture)
    # JSON round trip: the comparison with a saved checkpoint sees lists, not tuples.
    meta = json.loads(
        json.dumps(
            {
                "train_config": cfg.to_dict(),
                "chosen_automatically": auto,
                "specs": [s.to_dict() for s in specs],
                "acts": str(acts),
                "n_rows": source.n_rows,
            }
        )
    )
    ckpt = out / CHECKPOINT_DIR
    if out.exists() and not resume and not overwrite and (ckpt.exists() or any(out.glob("**/" + io.CFG_FILE))):
        raise FileExistsError(
            f"{out} already holds an SAE or a checkpoint; pass --resume to continue it or --overwrite"
        )
    if resume and (out / SUMMARY_FILE).exists() and not ckpt.exists():
        done = json.loads((out / SUMMARY_FILE).read_text())
        if with_defaults(done.get("train_config", {})) == meta["train_config"] and done.get("specs") == meta["specs"]:
            log.info("%s: training already finished; nothing to resume", out)
            return [sae_dir(out, specs, s) for s in specs]
    out.mkdir(parents=True, exist_ok=True)
    handler = _attach_log_file(out)
    for note in notes:
        log.info("chose %s", note)
    try:
        return _train(source, out, specs, cfg, resume, meta, metadata or source.metadata)
    finally:
        logging.getLogger("sae_core").removeHandler(handler)
        handler.close()


def _train(
    source: ActivationSource,
    out: Path,
    specs: list[RunSpec],
    cfg: TrainConfig,
    resume: bool,
    meta: dict,
    src_meta: dict,
) -> list[Path]:
    device = resolve_device(cfg.device)
    plan = make_plan(source.n_rows, cfg.batch_size, cfg.block_rows, cfg.chunk_rows)
    per_epoch = plan.batches_per_epoch
    total = per_epoch * cfg.epochs
    dead_after = min(cfg.dead_after_samples, source.n_rows)
    runs = [SAETrainer(spec, cfg, device) for spec in specs]
    step = 0
    ckpt = out / CHECKPOINT_DIR
    if resume and (ckpt / "state.json").exists():
        step = load_checkpoint(ckpt, runs, meta)
        log.info("resumed from %s at step %d/%d", ckpt, step, total)
    else:
        try:
            init_runs(runs, torch.from_numpy(sample_rows(source, cfg.init_rows, cfg.batch_seed)), cfg)
        except ValueError as exc:
            raise ValueError(f"{source.path}: {exc}") from None
    atomic_write_text(out / "train_config.json", json.dumps(meta, indent=2))
    log.info(
        "training %d SAE(s) on %d rows x %d, %d steps (%d per epoch) on %s",
        len(runs),
        source.n_rows,
        source.d,
        total,
        per_epoch,
        device,
    )
    bar = Progress(total, "train", unit="step", logger=log, initial=step)
    for run in runs:
        run.sae.train()
    while step < total:
        epoch, skip = divmod(step, per_epoch)
        for x in iter_batches(source, plan, cfg.batch_seed, epoch, skip=skip, device=device):
            for run in runs:
                run.step(x, step, total, cfg, dead_after)
            step += 1
            bar.update()
            checkpoint = cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total
            if step % cfg.log_every == 0 or step == total or checkpoint:
                for run in runs:  # CUDA's deferred NaN check: before anything is logged or saved
                    run.check_finite(cfg)
            if step % cfg.log_every == 0 or step == total:
                _log_metrics(runs, step, total, bar)
            if checkpoint:
                save_checkpoint(out, runs, step, meta)
            if step >= total:
                break
    bar.close()
    written = _save_runs(source, out, specs, runs, cfg, meta, src_meta, total)
    shutil.rmtree(ckpt, ignore_errors=True)
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written


def _save_runs(
    source: ActivationSource,
    out: Path,
    specs: list[RunSpec],
    runs: list[SAETrainer],
    cfg: TrainConfig,
    meta: dict,
    src_meta: dict,
    total: int,
) -> list[Path]:
    """Refit (relu, jumprelu: `TrainConfig.refit`) and save every trained SAE, and the run's summary."""
    written = []
    summary = {**meta, "steps": total, "final_metrics": {}}
    refit_x = None
    for run in runs:
        run.sae.eval()
        dest = sae_dir(out, specs, run.spec)
        cfg_meta = {
            **_cfg_metadata(src_meta),
            **run.sae.cfg.metadata,
            "l1_coefficient": run.spec.l1_coefficient,
            "trained_rows": source.n_rows,
            "steps": total,
        }
        if run.spec.cfg.architecture in ("relu", "jumprelu"):
            cfg_meta.update(
                l1_convention=cfg.l1_convention, l1_coefficient_mean=run.spec.l1_coefficient * float(run.l1_scale)
            )
        run.sae.cfg = SAEConfig.from_dict({**run.sae.cfg.to_dict(), "metadata": cfg_meta})
        for name, t in io.sae_state_tensors(run.sae).items():
            if not torch.isfinite(t).all():
                raise TrainingDiverged(f"SAE {run.spec.name!r}: {name} contains NaN/inf after training; not saved")
        before = None
        skip = (
            too_large(run.sae, cfg.refit) if cfg.refit != "none" and run.spec.cfg.architecture in REFIT_ARCHS else None
        )
        if skip:
            log.warning("%s: no refit: %s", run.spec.name, skip)
            run.sae.cfg = SAEConfig.from_dict(
                {**run.sae.cfg.to_dict(), "metadata": {**cfg_meta, "refit": "none", "refit_skipped": skip}}
            )
        elif cfg.refit != "none" and run.spec.cfg.architecture in REFIT_ARCHS:
            if refit_x is None:
                refit_x = torch.from_numpy(sample_rows(source, cfg.refit_rows, cfg.seed + 2))
            before = copy.deepcopy(run.sae)
            info = refit_(run.sae, refit_x, mode=cfg.refit)
            run.sae.cfg = SAEConfig.from_dict(
                {**run.sae.cfg.to_dict(), "metadata": {**cfg_meta, "refit": cfg.refit, **info}}
            )
        if dest == out:
            _save_into_run_folder(run.sae, out, before)
        else:
            io.save_sae(run.sae, dest)
            if before is not None:
                io.save_sae(before, dest / BEFORE_REFIT_DIR)
        summary["final_metrics"][run.spec.name] = run.last_metrics
        written.append(dest)
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2))
    return written


def _save_into_run_folder(sae, out: Path, before=None) -> None:
    """A single SAE is written into OUT itself: swap in a folder holding its files and the run's
    own (train_config.json, train.log), so saving the SAE keeps what the run wrote; `before`
    (the SAE before its refit) goes to OUT/before_refit/."""
    for handler in logging.getLogger("sae_core").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.close()  # reopened (appending, in the new folder) by the next line logged

    def fill(tmp: Path) -> None:
        io.save_sae(sae, tmp / "sae")
        for f in (tmp / "sae").iterdir():
            os.replace(f, tmp / f.name)
        (tmp / "sae").rmdir()
        if before is not None:
            io.save_sae(before, tmp / BEFORE_REFIT_DIR)
        for name in ("train_config.json", LOG_FILE):
            if (out / name).exists():
                shutil.copy2(out / name, tmp / name)

    atomic_write_dir(out, fill)


def _cfg_metadata(src_meta: dict) -> dict:
    """Carry the activation cache's provenance (model, weights, hook, tokens) into cfg.json."""
    keys = (
        "model_name",
        "model_config_path",
        "pretrained",
        "random_weights",
        "seed",
        "weights_sha256",
        "hook_name",
        "tokens",
        "image_size",
    )
    return {k: src_meta[k] for k in keys if k in src_meta}


def _log_metrics(runs: list[SAETrainer], step: int, total: int, bar: Progress) -> None:
    for run in runs:
        if not run.acc.n:
            continue
        m = run.last_metrics = run.acc.result()
        log.info(
            "step %d/%d %s loss=%.4g mse=%.4g l0=%.1f ev=%.4f cos=%.4f alive=%.1f%% lr=%.3g",
            step,
            total,
            run.spec.name,
            run.last_loss,
            m["mse"],
            m["l0"],
            m["explained_variance"],
            m["cosine_similarity"],
            100 * m["alive_fraction"],
            run.opt.lr,
        )
        run.acc.reset()
    first = runs[0]
    bar.set_postfix(loss=f"{first.last_loss:.3g}")
