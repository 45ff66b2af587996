"""Labelled image sets from local disk (nothing downloads): CIFAR-10/100 binary archives,
read with numpy (never unpickled), and ImageFolder trees.

Layouts (`--dataset PATH`):
- CIFAR-10 binary:  PATH has data_batch_1.bin … data_batch_5.bin, test_batch.bin
                    (+ batches.meta.txt), or PATH/cifar-10-batches-bin/ does.
                    Records: 1 label byte + 3072 pixel bytes (R, G, B planes of 32×32).
- CIFAR-100 binary: PATH has train.bin, test.bin (+ fine_label_names.txt), or
                    PATH/cifar-100-binary/ does. Records: coarse byte, fine byte, 3072 pixels.
- ImageFolder:      PATH/train/<class>/<image>, PATH/test/<class>/<image> (or val/);
                    or PATH/<class>/<image> (one split: zero-shot only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from precompute.images import IMAGE_EXTENSIONS, load_image

from .prompts import CIFAR10_CLASSES, CIFAR100_CLASSES

Split = Literal["train", "test"]

LAYOUTS = """expected one of these layouts:
  CIFAR-10 binary   PATH/data_batch_1.bin … data_batch_5.bin, PATH/test_batch.bin (or PATH/cifar-10-batches-bin/)
  CIFAR-100 binary  PATH/train.bin, PATH/test.bin (or PATH/cifar-100-binary/)
  ImageFolder       PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg (or val/), or PATH/<class>/*.jpg"""

_CIFAR_SIDE = 32
_CIFAR_PIXELS = 3 * _CIFAR_SIDE * _CIFAR_SIDE


@dataclass
class LabelledImages:
    """One split of a labelled image set: uint8 pixels [N, H, W, 3] (CIFAR) or image files."""

    name: str
    kind: str
    """cifar10, cifar100 or imagefolder (picks the default prompt templates)."""
    classnames: list[str]
    labels: np.ndarray
    pixels: np.ndarray | None = None
    paths: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        """Image i as RGB; a bad file raises precompute.images.BadImage (callers skip it)."""
        if self.pixels is not None:
            return Image.fromarray(self.pixels[i])
        return load_image(self.paths[i])[0]  # type: ignore[index]

    def subset(self, n: int | None, seed: int = 0) -> LabelledImages:
        """A seeded random subset of n images (all of them when n is None or ≥ N), in index order."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise ValueError(f"--max-images must be positive; got {n}")
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return LabelledImages(
            self.name,
            self.kind,
            self.classnames,
            self.labels[idx],
            None if self.pixels is None else self.pixels[idx],
            None if self.paths is None else [self.paths[i] for i in idx],
        )


def _read_cifar(files: list[Path], label_bytes: int, label_at: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + _CIFAR_PIXELS
    labels, pixels = [], []
    for f in files:
        raw = np.fromfile(f, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise ValueError(
                f"{f}: {raw.size} bytes is not a whole number of {record}-byte CIFAR records "
                "(truncated, or not the binary version of the archive)"
            )
        rows = raw.reshape(-1, record)
        labels.append(rows[:, label_at].astype(np.int64))
        pixels.append(rows[:, label_bytes:].reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1))
    return np.concatenate(labels), np.ascontiguousarray(np.concatenate(pixels))


def _names_file(path: Path, expected: int, fallback: tuple[str, ...]) -> list[str]:
    """Class names from the archive's text file (underscores read as spaces), else the built-in list."""
    if path.is_file():
        names = [ln.strip().replace("_", " ") for ln in path.read_text().splitlines() if ln.strip()]
        if len(names) != expected:
            raise ValueError(f"{path}: {len(names)} class names, expected {expected}")
        return names
    return list(fallback)


def _check_labels(labels: np.ndarray, n_classes: int, where: Path) -> None:
    if labels.size and int(labels.max()) >= n_classes:
        raise ValueError(f"{where}: label {int(labels.max())} is out of range for {n_classes} classes")


def _open_cifar10(root: Path, split: Split) -> LabelledImages:
    files = [root / f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else [root / "test_batch.bin"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: CIFAR-10 {split} split needs {', '.join(missing)}; {LAYOUTS}")
    labels, pixels = _read_cifar(files, 1, 0)
    _check_labels(labels, 10, root)
    names = _names_file(root / "batches.meta.txt", 10, CIFAR10_CLASSES)
    return LabelledImages("CIFAR-10", "cifar10", names, labels, pixels=pixels)


def _open_cifar100(root: Path, split: Split) -> LabelledImages:
    f = root / f"{split}.bin"
    if not f.is_file():
        raise FileNotFoundError(f"{root}: CIFAR-100 {split} split needs {f.name}; {LAYOUTS}")
    labels, pixels = _read_cifar([f], 2, 1)  # byte 0 is the coarse label, byte 1 the fine one
    _check_labels(labels, 100, root)
    names = _names_file(root / "fine_label_names.txt", 100, CIFAR100_CLASSES)
    return LabelledImages("CIFAR-100", "cifar100", names, labels, pixels=pixels)


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _open_imagefolder(root: Path, split: Split | None) -> LabelledImages:
    split_dir = None
    for name in ("train",) if split == "train" else ("test", "val"):
        if (root / name).is_dir():
            split_dir = root / name
            break
    if split_dir is None:
        if any((root / s).is_dir() for s in ("train", "test", "val")):
            raise FileNotFoundError(f"{root}: no {split or 'test'!r} split folder; {LAYOUTS}")
        if split == "train":
            raise FileNotFoundError(f"{root}: a linear probe needs train/ and test/ (or val/) class folders; {LAYOUTS}")
        split_dir = root
    classes = _class_dirs(split_dir)
    if not classes:
        raise ValueError(f"{split_dir}: no class sub-folders; {LAYOUTS}")
    paths: list[Path] = []
    labels: list[int] = []
    for c, d in enumerate(classes):
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += files
        labels += [c] * len(files)
    if not paths:
        raise ValueError(
            f"{split_dir}: the class folders hold no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); {LAYOUTS}"
        )
    names = [d.name.replace("_", " ") for d in classes]
    return LabelledImages(root.name, "imagefolder", names, np.asarray(labels, dtype=np.int64), paths=paths)


_PICKLED = ("data_batch_1", "test_batch", "batches.meta", "meta", "train", "test")


def open_dataset(path: str | Path, split: Split | None = "test") -> LabelledImages:
    """Open `path` (CIFAR-10/100 binary or an ImageFolder tree) at `split`.

    `split=None` is the test split, or a whole ImageFolder tree that has no split folders
    (zero-shot only). Wrong layouts raise
    FileNotFoundError / ValueError naming the expected layouts."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {root} is not a folder; {LAYOUTS}")
    for sub in ("cifar-10-batches-bin", "cifar-100-binary"):
        if (root / sub).is_dir():
            root = root / sub
    if (root / "test_batch.bin").is_file() or (root / "data_batch_1.bin").is_file():
        return _open_cifar10(root, split or "test")
    if (root / "test.bin").is_file() or (root / "train.bin").is_file():
        return _open_cifar100(root, split or "test")
    if (
        root.name.endswith("-py")
        or root.name.endswith("-python")
        or any((root / n).is_file() for n in _PICKLED)
        or (root / "cifar-10-batches-py").is_dir()
        or (root / "cifar-100-python").is_dir()
    ):
        raise ValueError(
            f"{root} looks like the Python (pickle) version of CIFAR, which is never unpickled here "
            "(unpickling runs arbitrary code): use the binary version (cifar-10-binary.tar.gz / "
            f"cifar-100-binary.tar.gz); {LAYOUTS}"
        )
    return _open_imagefolder(root, split)
