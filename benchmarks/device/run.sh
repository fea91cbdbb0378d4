#!/usr/bin/env bash
# Run THERE (device tool, carry [".whl"]): `bash benchmarks/device/run.sh [CHECK ...]` — all checks take
# about 6-8 minutes on an H200. Installs the carried wheels, then runs the checks named (default: all):
#   sdpa        stage 1 + 2 on the `bench` preset (CLIP-L/336 + Qwen2.5-0.5B shapes, random weights), bf16, SDPA
#   flex        the same with attn flex_attention (packed block mask compiled by torch)
#   zero2       the same as sdpa under DeepSpeed ZeRO-2
#   train_step  packed vs padded train step (benchmarks/train_step.py), warm-up by whole pass and by one step
#   ct2         `--backend ct2 --device cuda`: CTranslate2 on the GPU vs all CPU cores (benchmarks/ct2_device.py)
# Logs land in $OUT; each JSON is the last line of its log.
set -uo pipefail
checks=("$@"); [ ${#checks[@]} -eq 0 ] && checks=(sdpa flex zero2 train_step ct2)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site \
    .whl/deepspeed-*.tar.gz || echo "deepspeed did not install: the zero2 run will fail"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LMM_CACHE=/tmp/lmm-cache HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, importlib.util as u; print(torch.__version__, transformers.__version__, 'flash_attn', bool(u.find_spec('flash_attn')))" | tee -a "$OUT/gpu.txt"
for c in "${checks[@]}"; do
  case $c in
    sdpa) timeout 240 python3 benchmarks/gpu_stages.py --steps 30 --attn sdpa 2>&1 | tee "$OUT/stages_sdpa.log" | grep -v "━" ;;
    flex) timeout 300 python3 benchmarks/gpu_stages.py --steps 30 --attn flex_attention 2>&1 | tee "$OUT/stages_flex.log" | grep -v "━" ;;
    zero2) timeout 200 python3 benchmarks/gpu_stages.py --steps 30 --deepspeed pipelines/deepspeed/zero2.json 2>&1 \
             | tee "$OUT/stages_zero2.log" | grep -v "━" ;;
    train_step) for w in pass step; do
        timeout 150 python3 benchmarks/train_step.py --device cuda --samples 256 --warmup $w 2>&1 | tee "$OUT/train_step_$w.log" | tail -n 6
      done ;;
    ct2) libs=$(find /usr /opt -name 'libcublas*.so.*' 2>/dev/null | head -n 8); echo "$libs"
         timeout 240 python3 benchmarks/ct2_device.py 2>&1 | tee "$OUT/ct2.log" | tail -n 3
         # CTranslate2 4.x dlopens libcublas.so.12; on a CUDA-13-only image try the 13 libraries under that name
         if grep -q cuda_error "$OUT/ct2.log" && ! grep -q 'libcublas.so.12' <<<"$libs"; then
           shim=/tmp/cublas12; mkdir -p $shim
           for f in $(grep -E 'libcublas(Lt)?\.so\.13$' <<<"$libs"); do ln -sf "$f" "$shim/$(basename "${f%.13}").12"; done
           LD_LIBRARY_PATH=$shim:${LD_LIBRARY_PATH:-} timeout 240 python3 benchmarks/ct2_device.py 2>&1 \
             | tee "$OUT/ct2_shim.log" | tail -n 3
         fi ;;
    *) echo "unknown check $c" ;;
  esac
done
