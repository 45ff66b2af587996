#!/usr/bin/env bash
# The device benchmark in one command (benchmarks/gpu/README.md):
#   bash benchmarks/gpu/run.sh [--smoke] [--out DIR] [--only a,b] [--skip a,b] [--deadline SECONDS]
# Results go to --out, else $OUT, else bench_out/gpu: results.md, results.json, rows.jsonl,
# log.txt, profile_*.txt. Nothing is downloaded: wheels carried in .whl/ (benchmarks/gpu/wheels.sh)
# are installed into /tmp/clipsae-site first, the image's own packages untouched.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUTDIR=${OUT:-bench_out/gpu}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[i]}" = "--out" ] && OUTDIR=${args[i + 1]:-$OUTDIR}
done
mkdir -p "$OUTDIR"
WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null && [[ " $* " != *" --smoke "* ]]; then
  SITE=/tmp/clipsae-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
    && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" \
    || echo "run.sh: installing the wheels in $WHEELS failed; running with what is installed"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False \
  HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} \
  PYTORCH_NVML_BASED_CUDA_CHECK=1
"$PY" benchmarks/gpu/bench_gpu.py --out "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/log.txt"
exit "${PIPESTATUS[0]}"
