"""Class names and prompt templates for zero-shot classification.

CIFAR-10/100 use the class names and the 18 prompt templates of CLIP's CIFAR evaluation
(also used by OpenCLIP's benchmark), so our numbers compare with published ones. Other
datasets use OpenCLIP's templates (`openai`: the 80 ImageNet templates, `simple`: 7), or a
text file with one template per line containing `{}`.
"""

from __future__ import annotations

from pathlib import Path

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

CIFAR100_CLASSES = tuple(
    name.replace("_", " ")
    for name in """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split()
)

CIFAR_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)


def templates_for(kind: str, choice: str | None = None) -> list[str]:
    """Templates by name (`cifar`, `openai`, `simple`), from a file, or the dataset's default."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    choice = choice or ("cifar" if kind.startswith("cifar") else "simple")
    if choice == "cifar":
        return list(CIFAR_TEMPLATES)
    if choice in ("openai", "simple"):
        fns = OPENAI_IMAGENET_TEMPLATES if choice == "openai" else SIMPLE_IMAGENET_TEMPLATES
        return [fn("{}") for fn in fns]
    path = Path(choice)
    if not path.is_file():
        raise FileNotFoundError(f"--templates {choice!r}: not cifar, openai, simple or a text file")
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    bad = [ln for ln in lines if ln.count("{}") != 1]
    if not lines or bad:
        raise ValueError(
            f"{path}: each template line must contain exactly one '{{}}' for the class name"
            + (f" (not: {bad[0]!r})" if bad else " (the file is empty)")
        )
    return lines


def classes_from_file(path: str | Path, n_classes: int) -> list[str]:
    """Class names for prompts, one per line in label order (overrides the dataset's names)."""
    names = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if len(names) != n_classes:
        raise ValueError(f"{path}: {len(names)} class names, but the dataset has {n_classes} classes")
    return names
