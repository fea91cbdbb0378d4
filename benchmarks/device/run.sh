#!/usr/bin/env bash
# Run THERE (device tool, carry [".whl"]): `bash benchmarks/device/run.sh` — about 6-8 minutes.
# Installs the carried wheels, then measures stage 1 + stage 2 on the `bench` preset (CLIP-L/336 +
# Qwen2.5-0.5B shapes, random weights) with bf16: SDPA without DeepSpeed, then DeepSpeed ZeRO-2, then
# the packed-vs-padded train step. Logs land in $OUT; each JSON is the last line of its log.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site \
    .whl/deepspeed-*.tar.gz || echo "deepspeed did not install: the zero2 run will fail"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LMM_CACHE=/tmp/lmm-cache HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, importlib.util as u; print(torch.__version__, transformers.__version__, 'flash_attn', bool(u.find_spec('flash_attn')))" | tee -a "$OUT/gpu.txt"
timeout 240 python3 benchmarks/gpu_stages.py --steps 30 2>&1 | tee "$OUT/stages_sdpa.log" | grep -v "━"
timeout 200 python3 benchmarks/gpu_stages.py --steps 30 --deepspeed pipelines/deepspeed/zero2.json 2>&1 | tee "$OUT/stages_zero2.log" | grep -v "━"
timeout 120 python3 benchmarks/train_step.py --device cuda --samples 256 2>&1 | tee "$OUT/train_step.log" | tail -n 3
