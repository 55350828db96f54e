#!/usr/bin/env bash
# One-GPU check at FLUX.1-dev size with random weights, no downloads (<= 8 minutes on one H100 / H200):
#   bash benchmarks/gpu_check.sh [--out DIR] [--skip-estimates]
# Writes DIR/gpu_check.{json,md} (default docs/results/gpu_check). See benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 480 python benchmarks/gpu_check.py --device cuda "$@"
