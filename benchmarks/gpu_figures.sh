#!/usr/bin/env bash
# The GPU figures of docs/model.md, docs/sampling.md and docs/rl.md in one script, for a
# single-GPU machine whose image already has jax[cuda], flax, optax, orbax, torch and
# transformers (pip cannot reach the internet there). Wheels it lacks (ml-collections,
# tensorboardX) are taken from ./.whl if present:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0 tensorboardx==2.6.5
# Usage: bash benchmarks/gpu_figures.sh [OUT_DIR]   (each bench's output lands in OUT_DIR)
# PEAK_TFLOPS / PEAK_HBM_GBPS default to an H100/H200 (989 bf16 dense, 4800 GB/s for the
# H200; use 3350 for an H100 SXM).
set -euo pipefail
out=${1:-${OUT:-/tmp/sandmle_gpu}}
mkdir -p "$out"
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sandmle_site .whl/*.whl
  export PYTHONPATH=/tmp/sandmle_site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
peak_tflops=${PEAK_TFLOPS:-989}
peak_hbm=${PEAK_HBM_GBPS:-4800}
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi"; } | tee "$out/gpu.txt"
run() {  # name, then the command; a failing bench does not stop the others
  local name=$1; shift
  echo "== $name: $*"
  if ! timeout "${BENCH_TIMEOUT_S:-240}" "$@" > "$out/$name.txt" 2>&1; then
    echo "   (failed or timed out; see $out/$name.txt)"
  fi
  tail -8 "$out/$name.txt"
}
run learner python3 benchmarks/learner_bench.py --preset=qwen3-0.6b --batch=8 --seq_len=512 \
  --compute_dtype=bfloat16 --steps=3 --peak_tflops="$peak_tflops"
run learner_8k_cudnn python3 benchmarks/learner_bench.py --preset=qwen3-0.6b --batch=1 \
  --seq_len=8192 --compute_dtype=bfloat16 --attention=cudnn --steps=3 --peak_tflops="$peak_tflops"
run sampler python3 benchmarks/sampler_bench.py --device=gpu --preset=qwen3-0.6b \
  --dtype=bfloat16 --peak_hbm_gbps="$peak_hbm" --repeats=1
run forward python3 benchmarks/forward_bench.py --device=gpu --preset=qwen3-0.6b \
  --dtype=bfloat16 --batch=8 --length=1024
