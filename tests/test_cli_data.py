"""The lmmdata console script on hostile inputs: exit codes, summaries, outputs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import llava, read_jsonl

LMMDATA = [shutil.which("lmmdata") or str(Path(sys.executable).parent / "lmmdata")]


def lmmdata(*args, cwd=None):
    return subprocess.run([*LMMDATA, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={"COLUMNS": "200", "PATH": str(Path(sys.executable).parent)})


def hostile(tmp_path: Path) -> Path:
    lines = [
        json.dumps(llava(0, "a.jpg")),
        '{"id": "broken", "conversations": [',
        json.dumps({**llava(9), "id": "wrongtype", "image": 3}),
        json.dumps({"id": "mismatch", "image": ["a.jpg", "b.jpg"], "conversations": [
            {"from": "human", "value": "<image> only one"}, {"from": "gpt", "value": "x"}]}),
        json.dumps({"id": "empty", "conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "x"}]}),
        json.dumps({"id": "role", "conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "x"}]}),
        json.dumps(llava(1, "b.jpg")),
        json.dumps(llava(2, "c.jpg")),
        json.dumps(llava(3, "d.jpg"))[:-9],  # truncated last line
    ]
    p = tmp_path / "hostile.jsonl"
    p.write_text("\n".join(lines))
    return p


def test_mix_text_hostile_input_exit_0_summary_and_rejects(tmp_path, alpaca_file):
    src = hostile(tmp_path)
    out, rej = tmp_path / "out.json", tmp_path / "rejects.jsonl"
    r = lmmdata("mix-text", src, alpaca_file, "-o", out, "--ratio", "0.25", "--rejects", rej)
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stderr and "id=mismatch" in r.stderr and "hostile.jsonl:4" in r.stderr
    for reason in ("malformed_json", "bad_image_field", "placeholder_mismatch", "empty_turn", "unknown_role", "truncated"):
        assert f"skipped_{reason}" in r.stdout
    rows = json.loads(out.read_text())
    assert [r["id"] for r in rows if "image" in r] and sorted(r["id"] for r in rows if "image" in r) == ["r0", "r1", "r2"]
    assert len(rows) == 4
    rejects = read_jsonl(rej)
    assert {x["reason"] for x in rejects} == {"malformed_json", "bad_image_field", "placeholder_mismatch", "empty_turn", "unknown_role", "truncated"}
    saved = yaml.safe_load((tmp_path / "out.json.config.yaml").read_text())
    assert saved["config"]["ratio"] == 0.25 and saved["summary"]["skipped"]["unknown_role"] == 1


def test_strict_exits_3_but_writes(tmp_path, alpaca_file):
    out = tmp_path / "out.jsonl"
    r = lmmdata("mix-text", hostile(tmp_path), alpaca_file, "-o", out, "--ratio", "0.25", "--strict")
    assert r.returncode == 3 and len(read_jsonl(out)) == 4


def test_bad_settings_exit_1_and_write_nothing(tmp_path, alpaca_file, mm_file):
    out = tmp_path / "out.jsonl"
    r = lmmdata("mix-text", mm_file, alpaca_file, "-o", out, "--ratio", "0.9")
    assert r.returncode == 1 and "--allow-repeat" in r.stderr and "Traceback" not in r.stderr
    r = lmmdata("mix-text", tmp_path / "nope.jsonl", alpaca_file, "-o", out)
    assert r.returncode == 1 and "no such file" in r.stderr
    r = lmmdata("mix-text", mm_file, alpaca_file, "-o", tmp_path / "out.csv")
    assert r.returncode == 1 and "extension" in r.stderr
    assert not out.exists()


def test_config_file_with_cli_override(tmp_path, alpaca_file, mm_file):
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(yaml.safe_dump({"mm": str(mm_file), "text": [str(alpaca_file)], "out": str(tmp_path / "o.jsonl"), "ratio": 0.2, "seed": 4}))
    r = lmmdata("mix-text", "-c", cfg, "--ratio", "0.25")
    assert r.returncode == 0, r.stderr
    assert len(read_jsonl(tmp_path / "o.jsonl")) == 53
    cfg.write_text(yaml.safe_dump({"ratoi": 0.1}))
    r = lmmdata("mix-text", "-c", cfg)
    assert r.returncode == 1 and "unknown option(s) ratoi" in r.stderr


def test_make_negatives_cli(tmp_path, mm_file):
    out = tmp_path / "neg.jsonl"
    r = lmmdata("make-negatives", mm_file, "-o", out, "--per-record", "2", "--positives", "0.2", "--hard", "--seed", "1")
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(out)
    assert sum(r.get("negative") is True for r in rows) == 80 and sum(r.get("negative") is False for r in rows) == 20
    assert "negatives" in r.stdout and "80" in r.stdout
