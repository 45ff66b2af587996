#!/usr/bin/env bash
# Download, on a machine with a package registry, the wheels that benchmarks/gpu/run.sh needs
# on the device machine and that its image lacks (its python3 is 3.12 with torch, triton,
# transformers, accelerate, safetensors, huggingface_hub, scipy, timm, pyarrow, pandas...; it
# has no network). Into .whl/ (git-ignored); carry that folder with the run: run.sh installs
# every wheel it finds there into /tmp/site without touching the image's packages.
#   bash benchmarks/gpu/wheels.sh            # -> .whl/, ~40 MB
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64)
# The versions this repo is tested with (requirements*.txt, .venv); their dependencies that the
# image lacks are listed by name (--no-deps: nothing else is pulled in, torch least of all).
PKGS=(diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 faiss-cpu==1.15.1
      eai-sparsify==1.3.3 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 schedulefree==1.4.1
      simple-parsing==0.1.9 docstring-parser==0.18.0 natsort==8.4.0)
mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLAT[@]}" -d "$DEST" "${PKGS[@]}"
du -sh "$DEST"
