"""A new user's first hour: help texts that show every default, ordinary mistakes answered at once with a
clear message and the documented exit code (never a traceback), progress bars that end with the truth."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from conftest import llava, write_jsonl
from lmmdata.cli import app as data_app
from lmmdata.cliopts import field_default, shown
from lmmdata.mix import MixConfig
from lmmdata.negatives import NegativesConfig
from lmmdata.pack import PackConfig
from lmmdata.translate import TranslateConfig
from lmmtrain.cli import app as train_app
from lmmtrain.config import Stage1Config, Stage2Config

BIN = Path(sys.executable).parent
CONFIGS = [(data_app, "mix-text", MixConfig), (data_app, "make-negatives", NegativesConfig),
           (data_app, "translate", TranslateConfig), (data_app, "pack", PackConfig),
           (train_app, "stage1", Stage1Config), (train_app, "stage2", Stage2Config)]


def help_text(app, command: str) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return " ".join(re.sub(r"-\n\s+", "-", result.output).split())  # wrapping undone


@pytest.mark.parametrize("app,command,cls", CONFIGS, ids=[c[1] for c in CONFIGS])
def test_help_shows_each_options_config_default(app, command, cls):
    text = help_text(app, command)
    fields = {f.name for f in dataclasses.fields(cls)}
    checked = 0
    for param in typer.main.get_command(app).commands[command].params:
        if param.name not in fields or param.param_type_name != "option":
            continue
        default = field_default(cls, param.name)
        help_ = " ".join((param.help or "").split())
        assert help_ and help_ in text, (param.name, help_)  # rendered whole: no bracket eaten as markup
        if default is not None and default != []:  # [] = required (checked when the command runs)
            assert f"[default: {shown(default)}]" in help_, (param.name, help_)
            checked += 1
    assert checked >= 4


def test_help_texts_the_issue_quoted():
    mix = help_text(data_app, "mix-text")
    assert "Fraction of text-only records in the output, in [0, 1). [default: 0.2]" in mix
    assert "Random seed. [default: 0]" in mix
    assert "Tokens per packed row. [default: 2048]" in help_text(data_app, "pack")
    assert "--template <auto|chatml|qwen2|llama3|vicuna|plain>" in help_text(data_app, "pack")
    assert "--lang <zh|en|auto>" in help_text(data_app, "make-negatives")
    s1, s2 = help_text(train_app, "stage1"), help_text(train_app, "stage2")
    assert "Peak learning rate. [default: 0.001]" in s1 and "Peak learning rate. [default: 2e-05]" in s2
    assert "--preset <tiny|small|bench>" in s1 and "[default: tiny]" in s1
    assert "--attn <auto|sdpa|flash_attention_2|flex_attention|eager>" in s1
    chat = help_text(train_app, "chat")
    assert "[default: 128]" in chat and "[default: cuda when available]" in chat
    pope = help_text(train_app, "eval-pope")
    assert "[default: 1]" in pope and "[default: the records' folder]" in pope


def run(tool: str, *args, env: dict | None = None, stdin: str | None = None, timeout: int = 120):
    t0 = time.perf_counter()
    proc = subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, input=stdin,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout)
    proc.seconds = time.perf_counter() - t0
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.fixture
def records(tmp_path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [llava(i) for i in range(3)])


def test_unknown_extensions_are_setting_errors_and_nothing_is_written(records, tmp_path):
    for args in (["mix-text", records, records, "-o", tmp_path / "m.txt"],
                 ["make-negatives", records, "-o", tmp_path / "n.csv"],
                 ["translate", records, "-o", tmp_path / "t.tsv"]):
        proc = run("lmmdata", *args)
        assert proc.returncode == 1, proc.stderr
        assert "unknown record file extension; use .json (a list) or .jsonl" in proc.stderr
        assert not Path(args[-1]).exists()
    (tmp_path / "train.txt").write_text(records.read_text())
    proc = run("lmmdata", "pack", tmp_path / "train.txt", "-o", tmp_path / "shards", "--tokenizer", "qwen2.5",
               "--image-tokens", "16")
    assert proc.returncode == 1 and "train.txt: unknown record file extension" in proc.stderr
    assert not (tmp_path / "shards").exists()


def test_missing_paths_and_uncached_hub_names_fail_at_once_with_what_to_do(records, tmp_path):
    base = ["pack", records, "-o", tmp_path / "shards", "--image-tokens", "16"]
    proc = run("lmmdata", *base, "--tokenizer", tmp_path / "no-such-tokenizer")
    assert proc.returncode == 1 and "tokenizer" in proc.stderr and "no such file or directory" in proc.stderr
    assert "Repo id" not in proc.stderr
    proc = run("lmmdata", "pack", records, "-o", tmp_path / "shards", "--tokenizer", "qwen2.5",
               "--vision", "/nonexistent.json")
    assert proc.returncode == 1 and "--vision /nonexistent.json: no such file or directory" in proc.stderr
    # a hub name that was never downloaded: no network attempt (an unroutable endpoint would hang), an instant answer
    env = {"HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_ENDPOINT": "http://10.255.255.1", "HF_HUB_OFFLINE": "0"}
    proc = run("lmmdata", *base, "--tokenizer", "SomeOrg/never-downloaded", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "no hub model 'SomeOrg/never-downloaded' in the local Hugging Face cache" in " ".join(proc.stderr.split())
    assert "hf download SomeOrg/never-downloaded" in " ".join(proc.stderr.split())
    assert proc.seconds < 20
    assert not (tmp_path / "shards").exists()


def test_usage_errors_exit_2_and_name_the_option(records, tmp_path):
    proc = run("lmmdata", "mix-text", records, records)
    assert proc.returncode == 2 and "missing -o/--out" in proc.stderr
    proc = run("lmmdata", "pack", records)
    assert proc.returncode == 2 and "-o/--out" in proc.stderr and "--tokenizer" in proc.stderr
    proc = run("lmmdata", "make-negatives", records, "-o", tmp_path / "n.jsonl", "--lang", "fr")
    assert proc.returncode == 2 and "'--lang'" in proc.stderr and "'fr' is not one of 'zh', 'en', 'auto'" in proc.stderr
    proc = run("lmmdata", "make-negatives", records, "-o", tmp_path / "n.jsonl", "--per-record", "-1")
    assert proc.returncode == 1 and "--per-record must be >= 0, got -1" in proc.stderr
    proc = run("lmmdata", "make-negatives", records, "-o", tmp_path / "n.jsonl", "--positives", "1.5")
    assert proc.returncode == 1 and "--positives must be in [0, 1), got 1.5" in proc.stderr


@pytest.fixture
def fake_checkpoint(tmp_path) -> Path:
    """Enough of a checkpoint for the argument checks that run before any model loads."""
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "lmm_config.json").write_text("{}")
    return d


def test_wrong_lmmtrain_invocations_answer_in_under_2_s(fake_checkpoint, records, tmp_path):
    image = tmp_path / "cat.png"
    Image.new("RGB", (8, 8)).save(image)
    cases = [
        (["stage2", "-d", tmp_path], 1, "not a shard directory"),
        (["stage1"], 2, "missing -d/--data"),
        (["stage1", "-d", tmp_path / "nope"], 1, f"--data {tmp_path / 'nope'}: no such directory"),
        (["stage1", "--attn", "fast"], 2, "'fast' is not one of"),
        (["chat", "/nonexistent"], 1, "checkpoint /nonexistent: no such directory"),
        (["chat", tmp_path], 1, "is not a finished lmmtrain checkpoint"),
        (["chat", fake_checkpoint, "-p", "hi", "-i", "/nonexistent.jpg"], 1, "image /nonexistent.jpg: no such file"),
        (["chat", fake_checkpoint, "-p", "<image> and <image>?", "-i", image], 1,
         "2 <image> placeholder(s) in '<image> and <image>?' but 1 image(s) attached"),
        (["chat", fake_checkpoint, "-p", "hi", "-i", records], 1, "cannot be read"),
        (["eval-pope", "/nonexistent", "--data", records], 1, "no such directory"),
    ]
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    cases.append((["stage2", "-d", shards], 1, "stage2 starts from a stage-1 checkpoint: pass --init STAGE1_OUT"))
    cases.append((["stage2", "-d", shards, "--init", tmp_path], 1, "is not a finished lmmtrain checkpoint"))
    for args, rc, message in cases:
        proc = run("lmmtrain", *args)
        out = " ".join((proc.stdout + proc.stderr).split())
        assert proc.returncode == rc and message in out, (args, proc.returncode, out[-800:])
        assert proc.seconds < 2.0, (args, proc.seconds)


def test_pack_progress_bar_ends_with_the_rows_written(sample_data, qwen_dir, tmp_path):
    out = tmp_path / "shards"
    proc = run("lmmdata", "pack", sample_data, "-o", out, "--tokenizer", qwen_dir, "--image-root", sample_data.parent,
               "--image-tokens", "16", "--image-size", "64")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "manifest.json").read_text())["rows"]
    bar = [line for line in proc.stderr.splitlines() if line.lstrip().startswith("pack") and " rows" in line]
    assert bar and bar[-1].split(" rows")[0].split()[-1] == f"{rows:,}", bar


def test_checking_for_argos_packages_creates_nothing_in_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "ARGOS_"))}
    code = ("from lmmdata.backends.argos import find_argos_package\n"
            "try:\n    find_argos_package('en', 'zh')\nexcept Exception as e:\n    print(type(e).__name__, e)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, "HOME": str(home)})
    assert "ConfigError no en->zh Argos Translate package is installed" in proc.stdout, proc.stdout + proc.stderr
    assert "argospm install translate-en_zh" in proc.stdout
    assert list(home.iterdir()) == []
