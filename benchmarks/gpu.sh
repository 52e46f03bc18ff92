#!/usr/bin/env bash
# One short run (under 5 minutes) on a GPU machine: the refine cores' Triton kernels against the pure-torch loop
# and cuDNN's LSTM, then end-to-end FastRecurrentPPO on CUDA. Needs `pip install -e ".[gpu]"` and a CUDA torch.
# Extra arguments go to benchmarks/gpu.py (--dry-run checks the script on a CPU under Triton's interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python benchmarks/gpu.py "$@"
