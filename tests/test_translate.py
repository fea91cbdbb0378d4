"""The real argostranslate / CTranslate2 path on a tiny package built in a fixture."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import read_jsonl
from tiny_argos import argos_env, build_package

HERE = Path(__file__).resolve().parent
LMMDATA = str(Path(sys.executable).parent / "lmmdata")
PROTECTED = re.compile(r"<[^<>\s][^<>\n]{0,40}>|`[^`\n]+`|https?://\S+[^\s.,?]|\n")


@pytest.fixture(scope="session")
def argos_pkg(tmp_path_factory):
    return build_package(tmp_path_factory.mktemp("argos"))


@pytest.fixture
def env(tmp_path):
    e = {**os.environ, **argos_env(tmp_path / "home"), "COLUMNS": "200"}
    return e


def records(n: int = 12) -> list[dict]:
    rows = []
    qs = ["What is in the image?", "Describe the picture briefly.", "How many people are there?"]
    for i in range(n):
        rows.append({"id": f"r{i}", "image": [f"{i}.jpg", f"{i}b.jpg"], "meta": i, "conversations": [
            {"from": "system", "value": "You are a helpful assistant."},
            {"from": "human", "value": f"Image 1: <image>\nImage 2: <image>\n{qs[i % 3]} See `code_{i}` and https://x.org/{i}."},
            {"from": "gpt", "value": f"1. The bus is white and red.\n2. A cat number {i} is sitting on the sofa."}]})
    return rows


def run(args, env, check=True):
    r = subprocess.run([LMMDATA, *map(str, args)], capture_output=True, text=True, env=env)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def summary(out: Path) -> dict:
    return yaml.safe_load(Path(f"{out}.config.yaml").read_text())["summary"]


def test_missing_package_fails_at_once_with_how_to(tmp_path, env):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records(2)))
    r = run(["translate", src, "-o", tmp_path / "out.jsonl"], env, check=False)
    assert r.returncode == 1
    assert "argospm install translate-en_zh" in r.stderr and "--package" in r.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_translate_keeps_structure_and_caches(tmp_path, env, argos_pkg):
    rows = records()
    src = tmp_path / "in.json"
    src.write_text(json.dumps(rows))
    out = tmp_path / "out.jsonl"
    args = ["translate", src, "-o", out, "--package", argos_pkg, "--cache", tmp_path / "cache", "--keep-original",
            "--roles", "human,gpt"]
    run(args, env)
    got = read_jsonl(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for before, after in zip(rows, got):
        assert after["lang"] == "zh" and after["meta"] == before["meta"] and after["image"] == before["image"]
        assert after["conversations_en"] == before["conversations"]
        assert after["conversations"][0] == before["conversations"][0]  # system not in --roles
        for tb, ta in zip(before["conversations"], after["conversations"]):
            assert PROTECTED.findall(ta["value"]) == PROTECTED.findall(tb["value"])
            assert ta["value"].count("<image>") == tb["value"].count("<image>")
        assert after["conversations"][2]["value"].startswith("1. ") and "\n2. " in after["conversations"][2]["value"]
    first = summary(out)
    unique = first["translated"]
    assert first["strings"] == 12 * 6 and unique < first["strings"] and first["cache_hits"] == 0
    out.unlink()
    run(args, env)
    second = summary(out)
    assert second["translated"] == 0 and second["cache_hits"] == unique
    assert read_jsonl(out) == got


def test_our_batched_path_equals_argos_translate(tmp_path, env, argos_pkg):
    code = f"""
import json, sys
sys.path.insert(0, {str(HERE)!r})
import argostranslate.package, argostranslate.translate
from lmmdata.backends.argos import ArgosBackend
argostranslate.package.install_from_path({str(argos_pkg)!r})
texts = ["What is in the image?", "The bus is white and red. A cat is sitting on the sofa.", "How many?"]
ours = ArgosBackend("en", "zh").translate_batch(texts)
naive = [argostranslate.translate.translate(t, "en", "zh") for t in texts]
print(json.dumps([ours, naive]))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    ours, naive = json.loads(r.stdout.strip().splitlines()[-1])
    assert ours == naive and all(ours)


def test_kill_and_resume_gives_identical_output(tmp_path, env, argos_pkg):
    """kill -9 mid-run and rerun: output and rejects file byte-identical to an uninterrupted run."""
    rows = [json.dumps({"id": f"k{i}", "conversations": [{"from": "human", "value": f"Question number {i} about the cat?"},
                                                         {"from": "gpt", "value": f"Answer {i}: the bus is red."}]})
            for i in range(400)]
    for i in range(0, 400, 25):  # hostile records all along: each a skip with its own reason in the rejects file
        rows[i] = ["{oops", '{"id": "s", "conversations": [{"from": "human", "value": "broken \\ud800 text?"}]}',
                   '{"id": "d", "x": ' + "[" * 5000 + "]" * 5000 + "}"][(i // 25) % 3]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(r + "\n" for r in rows))
    ref = tmp_path / "ref.json"
    run(["translate", src, "-o", ref, "--package", argos_pkg, "--cache", tmp_path / "c1", "--batch-size", "16",
         "--rejects", tmp_path / "ref.rejects.jsonl"], env)
    out = tmp_path / "out.json"
    args = ["translate", src, "-o", out, "--cache", tmp_path / "c2", "--batch-size", "16",
            "--rejects", tmp_path / "out.rejects.jsonl"]
    progress = tmp_path / ".out.json.progress.json"
    p = subprocess.Popen([LMMDATA, *map(str, args)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if progress.exists() and json.loads(progress.read_text() or "{}").get("items", 0) >= 40:
            break
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not out.exists(), "the run finished before it could be killed; make the input larger"
    done = json.loads(progress.read_text())["items"]
    assert 0 < done < 400
    run(args, env)
    assert summary(out)["resumed_at_item"] >= done
    assert out.read_bytes() == ref.read_bytes()
    rejects = (tmp_path / "ref.rejects.jsonl").read_bytes()
    assert rejects.count(b"\n") == 16 and (tmp_path / "out.rejects.jsonl").read_bytes() == rejects
    assert {json.loads(r)["reason"] for r in rejects.splitlines()} == {"malformed_json", "bad_unicode", "too_deep"}
    assert not progress.exists() and not (tmp_path / ".out.json.partial.jsonl").exists()


def test_drop_suspicious_and_bad_records(tmp_path, env, argos_pkg):
    rows = records(3)
    lines = [json.dumps(r) for r in rows] + ["{oops", json.dumps({"id": "bad", "conversations": []})]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    run(["translate", src, "-o", out, "--package", argos_pkg, "--cache", tmp_path / "c", "--drop-suspicious"], env)
    s = summary(out)
    assert s["skipped"]["malformed_json"] == 1 and s["skipped"]["empty_conversation"] == 1
    assert s["skipped"].get("suspicious_translation", 0) + s["written"] == 3
    assert sum(s["flagged"].values()) >= s["skipped"].get("suspicious_translation", 0)


def test_a_sentence_longer_than_the_model_takes_is_translated_in_pieces(tmp_path, env, argos_pkg):
    """The tiny model has 256 positions; an unbroken 2,000-character string is ~1,000 tokens (it crashed before)."""
    rows = [{"id": "long", "conversations": [{"from": "human", "value": "x" * 2000 + " and the cat?"},
                                             {"from": "gpt", "value": "The bus is red."}]}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    run(["translate", src, "-o", out, "--package", argos_pkg, "--cache", tmp_path / "c"], env)
    assert summary(out)["written"] == 1 and read_jsonl(out)[0]["conversations"][0]["value"]
