#!/usr/bin/env bash
# GPU check: the tiny configs on CUDA in fp32 and bf16 against the CPU (stated tolerances), one epoch of ViT-B/16 LoRA
# on 224x224 random images (throughput, peak memory), a KFAC fit against that epoch, and 4 SG-MCMC chains against one.
# What each part runs and the tolerances: benchmarks/gpu_check.py. Exit 0 ok, 1 outside tolerance, 2 no CUDA.
#   benchmarks/gpu_check.sh [--json gpu_check.json] [--skip-tiny]
# PYTHON selects the interpreter (default: .venv/bin/python, else python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
# without CUDA, gpu_check.py stops before any work with exit status 2 and a one-line reason
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
exec "$PY" benchmarks/gpu_check.py --device cuda "$@"
