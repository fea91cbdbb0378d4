"""`translate --backend openai` against a real OpenAI-compatible server (`transformers serve`) and
`--backend ct2` on a real CTranslate2 model directory.

The server runs on 127.0.0.1, started here and stopped by PID. It serves
`echo_lm` models: rule-following "translators" that keep sentinels and turn every
other token into a Chinese character (so any protected span that reached them
raw would come back garbled), or that misbehave on purpose.
"""

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import read_jsonl, write_jsonl

HERE = Path(__file__).resolve().parent
LMMDATA = str(Path(sys.executable).parent / "lmmdata")
SERVE = str(Path(sys.executable).parent / "transformers")
PROTECTED = re.compile(r"```.*?```|`[^`\n]+`|https?://[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]|<[^<>\s][^<>\n]{0,40}>|\n"
                       r"|[\U0001F000-\U0001FAFF\u2600-\u27BF][\uFE0F\U0001F3FB-\U0001F3FF]*", re.DOTALL)

HOSTILE = [
    "<image>\nWhat is shown in this picture?",
    "What is the man holding? <image>",
    "Compare the left photo <image> with the right one <image> and say which is brighter.",
    "Run `pip install lmm-toolkit` and then open https://example.org/docs?page=2 for the details.",
    "Here is the code:\n```python\nprint('hello world')\n```\nIt prints a greeting.",
    "1. The bus is <b>white</b> and red.\n2. A dog 🐕 sleeps near the door 👍🏽.\n- A tree stands behind it.",
    "这张图片里有一只猫。 The cat is orange.",
    "这是一张照片。",
    "The tag <x1/> is literal text here, and so is <x2/> near <image>.",
    "Visit <a href=\"https://x.org\">the site</a> today ❤️ please.",
]


def records(texts) -> list[dict]:
    return [{"id": f"h{i}", **({"image": [f"{i}-{k}.jpg" for k in range(t.count("<image>"))]} if "<image>" in t else {}),
             "conversations": [{"from": "human", "value": t},
                               {"from": "gpt", "value": f"The answer number {i} is a red bus."}]}
            for i, t in enumerate(texts)]


def spans(text: str) -> list[str]:
    return PROTECTED.findall(text)


def kept_in_order(source: str, out: str) -> str:
    """Assert the source's protected spans appear byte-identical and in order in `out`; return the rest of out."""
    rest, pos = [], 0
    for s in spans(source):
        at = out.find(s, pos)
        assert at >= 0, (s, out)
        rest.append(out[pos:at])
        pos = at + len(s)
    return "".join(rest) + out[pos:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def echo_models(qwen_dir, tmp_path_factory):
    from echo_lm import MODES, build

    root = tmp_path_factory.mktemp("echo")
    return {m: str(build(root / m, qwen_dir, m)) for m in MODES}


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """`transformers serve` (no pinned model: each request names its model directory), logging request bodies."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([SERVE, "serve", "--trust-remote-code", "--host", "127.0.0.1", "--port", str(port),
                                 "--enable-log-requests", "--log-level", "debug"], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not start: " + log.read_text()[-3000:])
        yield {"url": url, "log": log, "pid": proc.pid}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(args, env=None, check=True):
    r = subprocess.run([LMMDATA, *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200", **(env or {})})
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def translate(tmp: Path, src: Path, server, model: str, *extra, name="out.jsonl", cache="cache", check=True):
    out = tmp / name
    r = run(["translate", src, "-o", out, "--backend", "openai", "--base-url", server["url"], "--model", model,
             "--cache", tmp / cache, "--concurrency", "4", *extra], check=check)
    return out, r


def summary(r) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"│ (\w+)\s+│\s+([\d.]+) │", r.stdout)}


def test_protected_spans_reach_the_model_only_as_sentinels(tmp_path, server, echo_models):
    src = write_jsonl(tmp_path / "in.jsonl", records(HOSTILE))
    log_start = server["log"].stat().st_size
    out, r = translate(tmp_path, src, server, echo_models["good"])
    rows = read_jsonl(out)
    sent = server["log"].read_bytes()[log_start:].decode("utf-8", "replace")
    assert "<x1/>" in sent and "bus is" in sent  # request bodies are in the log
    for rec, row in zip(records(HOSTILE), rows):
        assert "translation_flags" not in row, (row, r.stdout)
        for a, b in zip(rec["conversations"], row["conversations"]):
            rest = kept_in_order(a["value"], b["value"])  # byte-identical, in order
            for s in spans(a["value"]):
                if s.strip() and s != "<image>" and not s.startswith("<x"):
                    assert json.dumps(s)[1:-1] not in sent and s not in sent, s  # never sent raw
            assert not re.search(r"[A-Za-z]", rest), b["value"]  # the rest went through the model
    assert rows[7]["conversations"][0]["value"] == HOSTILE[7]  # already Chinese: kept, not sent
    s = summary(r)
    assert s["requests"] == s["translated"] and s["retries"] == 0 and s["written"] == len(HOSTILE)


@pytest.mark.parametrize("mode,flag", [("drop", "sentinels"), ("repeat", "sentinels"), ("chatter", "chatter"),
                                       ("loop", "repetition"), ("english", "latin")])
def test_misbehaving_model_ends_in_retries_and_flags(tmp_path, server, echo_models, mode, flag):
    texts = HOSTILE[2:4] + ["The small dog is sleeping on the green carpet near the window."]
    src = write_jsonl(tmp_path / "in.jsonl", records(texts))
    out, r = translate(tmp_path, src, server, echo_models[mode], "--retries", "2", "--max-tokens", "200",
                       "--rejects", tmp_path / "rej.jsonl")
    s = summary(r)
    rows = read_jsonl(out)
    if mode in ("drop", "repeat"):  # only lines with sentinels go wrong: retried twice each, then the source kept
        broken = [p for p in ("Compare the left photo <x1/> with the right one <x2/> and say which is brighter.",
                              "Run <x1/> and then open <x2/> for the details.")]
        assert s["retries"] == 2 * len(broken) and s["requests"] == s["translated"] + s["retries"]
        for rec, row in zip(records(texts), rows[:2]):
            assert row["conversations"][0]["value"] == rec["conversations"][0]["value"]
            assert flag in row["translation_flags"]
        assert "translation_flags" not in rows[2]
    else:  # every answer is wrong: 1 + 2 requests per string, every record flagged, none broken
        assert s["requests"] == 3 * s["translated"] and s["retries"] == 2 * s["translated"]
        for rec, row in zip(records(texts), rows):
            assert flag in row["translation_flags"], row
            for a, b in zip(rec["conversations"], row["conversations"]):
                kept_in_order(a["value"], b["value"])
    # with --drop-suspicious the flagged records go to the rejects file, named and with the reason
    out2, r2 = translate(tmp_path, src, server, echo_models[mode], "--max-tokens", "200", "--drop-suspicious", "--rejects",
                         tmp_path / "rej.jsonl", name="out2.jsonl")
    rejected = read_jsonl(tmp_path / "rej.jsonl")
    assert len(rejected) + len(read_jsonl(out2)) == len(texts)
    assert all(j["reason"] == "suspicious_translation" and flag in j["message"] for j in rejected
               if mode not in ("drop", "repeat")) and rejected
    assert summary(r2)["translated"] == 0  # every answer, flagged or not, came from the cache


def test_kill9_resume_is_byte_identical_rejects_included(tmp_path, server, echo_models):
    texts = [f"Item {i}: the {['red', 'small', 'old'][i % 3]} bus number {i} is near <b>the</b> station {i}."
             if i % 4 == 0 else f"Item {i}: a cat number {i} sits on the sofa." for i in range(160)]
    src = write_jsonl(tmp_path / "in.jsonl", records(texts))
    args = ["--drop-suspicious", "--batch-size", "16", "--retries", "1"]
    ref, _ = translate(tmp_path, src, server, echo_models["drop"], *args, "--rejects", tmp_path / "ref.rej.jsonl",
                       name="ref.jsonl", cache="c-ref")
    out = tmp_path / "out.jsonl"
    cmd = [LMMDATA, "translate", src, "-o", out, "--backend", "openai", "--base-url", server["url"], "--model",
           echo_models["drop"], "--cache", tmp_path / "c", "--concurrency", "4", *args, "--rejects",
           tmp_path / "rej.jsonl"]
    proc = subprocess.Popen(list(map(str, cmd)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / ".out.jsonl.progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (progress.exists() and json.loads(progress.read_text() or "{}").get("items", 0) >= 40):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "killed too late: the run had finished"
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed_at_item" in r.stdout
    assert out.read_bytes() == ref.read_bytes()
    assert (tmp_path / "rej.jsonl").read_bytes() == (tmp_path / "ref.rej.jsonl").read_bytes()
    assert len(read_jsonl(tmp_path / "rej.jsonl")) == 40  # every 4th record has a sentinel line the model drops


def test_fleet_retries_elsewhere_and_cache_key(tmp_path, server, echo_models):
    src = write_jsonl(tmp_path / "in.jsonl", records(HOSTILE[:6]))
    one, _ = translate(tmp_path, src, server, echo_models["good"], name="one.jsonl", cache="c1")
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    r = run(["translate", src, "-o", tmp_path / "fleet.jsonl", "--backend", "openai", "--base-url", dead,
             "--base-url", server["url"], "--model", echo_models["good"], "--cache", tmp_path / "c2",
             "--concurrency", "4"])
    assert (tmp_path / "fleet.jsonl").read_bytes() == one.read_bytes()
    assert summary(r)["server_retries"] >= 1
    # the cache key holds model, prompt and decoding: same settings hit, another prompt or temperature misses
    _, again = translate(tmp_path, src, server, echo_models["good"], name="again.jsonl", cache="c1")
    assert summary(again)["translated"] == 0 and summary(again)["cache_hits"] > 0
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text("system: Translate into {tgt_lang}. Keep tags like <x1/>.\nuser: '{text}'\n")
    _, other = translate(tmp_path, src, server, echo_models["good"], "--prompt", prompt, name="p.jsonl", cache="c1")
    assert summary(other)["cache_hits"] == 0 and summary(other)["translated"] > 0
    _, warm = translate(tmp_path, src, server, echo_models["good"], "--temperature", "0.5", name="t.jsonl", cache="c1")
    assert summary(warm)["cache_hits"] == 0


def test_server_errors_are_clear(tmp_path, server, echo_models):
    src = write_jsonl(tmp_path / "in.jsonl", records(HOSTILE[:2]))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    r = run(["translate", src, "-o", tmp_path / "o.jsonl", "--backend", "openai", "--base-url", dead, "--model", "m"],
            check=False)
    assert r.returncode == 1 and "no translation server answers" in r.stderr and dead in r.stderr
    r = run(["translate", src, "-o", tmp_path / "o.jsonl", "--backend", "openai", "--model", "m"], check=False)
    assert r.returncode == 1 and "needs --base-url" in r.stderr
    bad = tmp_path / "p.yaml"
    bad.write_text("user: no placeholder\n")
    r = run(["translate", src, "-o", tmp_path / "o.jsonl", "--backend", "openai", "--base-url", server["url"],
             "--model", echo_models["good"], "--prompt", bad], check=False)
    assert r.returncode == 1 and "{text}" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()


@pytest.fixture(scope="session")
def argos_pkg_dir(tmp_path_factory):
    import zipfile

    from tiny_argos import build_package

    d = tmp_path_factory.mktemp("argos-dir")
    with zipfile.ZipFile(build_package(d)) as z:
        z.extractall(d)
    return d / "translate-en_zh-tiny"


def test_ct2_backend_on_a_model_directory(tmp_path, argos_pkg_dir):
    """`--backend ct2 --model DIR`: a CTranslate2 model with its SentencePiece model beside it gives what
    CTranslate2 and SentencePiece give when called by hand."""

    import ctranslate2
    import sentencepiece as spm

    model = tmp_path / "ct2"
    shutil.copytree(argos_pkg_dir / "model", model)
    texts = ["What is in the image?", "A cat is sitting on the red sofa.", "How many people are there?"]
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "conversations": [{"from": "human", "value": t}, {"from": "gpt", "value": t}]}
                                               for i, t in enumerate(texts)])
    r = run(["translate", src, "-o", tmp_path / "o.jsonl", "--backend", "ct2", "--model", model], check=False)
    assert r.returncode == 1 and "no tokenizer beside model.bin" in r.stderr
    shutil.copy(argos_pkg_dir / "sentencepiece.model", model / "source.spm")
    run(["translate", src, "-o", tmp_path / "o.jsonl", "--backend", "ct2", "--model", model, "--cache", tmp_path / "c"])
    sp = spm.SentencePieceProcessor(model_file=str(model / "source.spm"))
    res = ctranslate2.Translator(str(model)).translate_batch([sp.encode(t, out_type=str) for t in texts], beam_size=4,
                                                             length_penalty=0.2, replace_unknowns=True)
    want = [sp.decode_pieces(r.hypotheses[0]).lstrip(" ") for r in res]
    got = [row["conversations"][0]["value"] for row in read_jsonl(tmp_path / "o.jsonl")]
    assert got == want and any(w.strip() for w in want)
    # a precision is CTranslate2's: int8 runs on any CPU; float16 is refused on one before any work
    run(["translate", src, "-o", tmp_path / "i8.jsonl", "--backend", "ct2", "--model", model, "--compute-type", "int8",
         "--cache", tmp_path / "c8"])
    assert len(read_jsonl(tmp_path / "i8.jsonl")) == len(texts)
    if "float16" not in ctranslate2.get_supported_compute_types("cpu"):
        r = run(["translate", src, "-o", tmp_path / "h.jsonl", "--backend", "ct2", "--model", model,
                 "--compute-type", "float16"], check=False)
        assert r.returncode == 1 and "--compute-type float16: not supported on cpu" in r.stderr
        assert not (tmp_path / "h.jsonl").exists()
    r = run(["translate", src, "-o", tmp_path / "g.jsonl", "--backend", "ct2", "--model", model, "--device", "cuda",
             "--compute-type", "float16"], check=False)
    if ctranslate2.get_cuda_device_count() == 0:
        assert r.returncode == 1 and "CTranslate2 sees no CUDA device" in r.stderr
    else:  # a GPU machine: the same strings come back (float16 there; a random model may differ in a token)
        assert r.returncode == 0, r.stderr[-2000:]
        assert len(read_jsonl(tmp_path / "g.jsonl")) == len(texts)
    r = run(["translate", src, "-o", tmp_path / "o.jsonl", "--backend", "ct2", "--model", tmp_path], check=False)
    assert r.returncode == 1 and "not a CTranslate2 model directory" in r.stderr


def test_cuda_cublas_12_is_loaded_from_site_packages_or_named_in_a_clear_error(tmp_path):
    """CTranslate2 4.x opens libcublas.so.12 by name; pip's nvidia-cublas-cu12 puts it where no loader looks."""
    from lmmdata.backends.ct2 import load_cublas
    from lmmdata.config import ConfigError

    try:
        ctypes.CDLL("libcublas.so.12")
        pytest.skip("this machine has a loadable libcublas.so.12")
    except OSError:
        pass
    with pytest.raises(ConfigError, match=r"libcublasLt\.so\.12.*pip install nvidia-cublas-cu12"):
        load_cublas([tmp_path / "nowhere"])
    lib = tmp_path / "nvidia" / "cublas" / "lib"
    lib.mkdir(parents=True)
    empty = tmp_path / "empty.c"
    empty.write_text("int lmm_marker(void) { return 12; }\n")
    compiler = next(filter(None, map(shutil.which, ("cc", "gcc", "clang", "c++"))), None)
    if compiler is None:
        pytest.skip("no C compiler to build the stand-in libraries")
    for name in ("libcublasLt.so.12", "libcublas.so.12"):  # real shared objects under the names CTranslate2 opens
        subprocess.run([compiler, "-shared", "-fPIC", f"-Wl,-soname,{name}", "-o", str(lib / name), str(empty)], check=True)
    load_cublas([tmp_path / "nowhere", lib])  # found in the second directory, loaded
    assert ctypes.CDLL("libcublas.so.12").lmm_marker() == 12  # now loadable by name, as CTranslate2 asks
