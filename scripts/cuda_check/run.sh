#!/usr/bin/env bash
# capsearch on CUDA (the device machine): prepare a Flickr8k subset (make_subset.py), embed and evaluate
# ViT-B-32 (random init) on the GPU, train the compact scratch model for 3 epochs there, time the engine.
set -uo pipefail
exec > >(tee "$OUT/log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
mkdir -p /tmp/site/capsearch-0.1.0.dist-info && printf "Metadata-Version: 2.1\nName: capsearch\nVersion: 0.1.0\n" > /tmp/site/capsearch-0.1.0.dist-info/METADATA
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 CAPSEARCH_ARTIFACTS=/tmp/art PYTHONUNBUFFERED=1
cs() { python3 -c 'import sys; from core.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
step() { echo "== $*" >&2; local s=$SECONDS; "$@"; echo "== rc=$? in $((SECONDS - s)) s: $*" >&2; }
step cs prepare flickr8k .gpu/f8k --name f8k
step cs embed --dataset f8k --model ViT-B-32 --device cuda --split test
step cs eval --dataset f8k --model ViT-B-32 --device cuda --json > "$OUT/eval_vit_cuda.json"
step cs train --dataset f8k --model capsearch-compact-scratch --name scratch-cuda --device cuda --epochs 3 --json > "$OUT/train_cuda.json"
step cs eval --dataset f8k --model scratch-cuda --device cuda --json > "$OUT/eval_scratch_cuda.json"
step python3 scripts/cuda_check/throughput.py > "$OUT/throughput_cuda.json"
step python3 scripts/cuda_check/decode_workers.py > "$OUT/decode_workers_cuda.json"
step python3 scripts/cuda_check/caption_batches.py > "$OUT/caption_batches_cuda.json"
