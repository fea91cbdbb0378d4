"""Inputs that a JSON parser, a filesystem or an image decoder accepts cost bounded time and memory and end as
counted skips with their own reason; nothing a run wrote is lost; leftovers of dead runs are cleaned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import N, llava, small, write_jsonl
from lmmdata.config import ConfigError
from hostile import png_claiming
from lmmdata.jsonio import iter_items

LMMDATA = str(Path(sys.executable).parent / "lmmdata")
SURROGATE = '{"id": "sur", "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\\nbroken \\ud800 text?"}, {"from": "gpt", "value": "ok"}]}'
DEEP = '{"id": "deep", "conversations": ' + "[" * 100_000 + "]" * 100_000 + "}"


def hostile_lines() -> list[str]:
    return [json.dumps(llava(0, "a.jpg")), SURROGATE, DEEP, json.dumps(llava(1, "b.jpg")),
            json.dumps({"id": "nul", "image": "a\u0000b.jpg", "conversations": [
                {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]}),
            json.dumps({"id": "long", "image": "x" * 5000, "conversations": [
                {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]}),
            json.dumps(llava(2, "a.jpg"))]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_lone_surrogates_and_deep_nesting_are_per_record_skips(tmp_path, fmt):
    lines = hostile_lines()
    path = tmp_path / f"in.{fmt}"
    path.write_text("\n".join(lines) + "\n" if fmt == "jsonl" else "[" + ",\n".join(lines) + "]")
    items = list(iter_items(path))
    kinds = [getattr(it, "reason", None) or it[0]["id"] for it in items]
    assert kinds == ["r0", "bad_unicode", "too_deep", "r1", "nul", "long", "r2"]


def test_pack_counts_bad_text_paths_and_structure_and_keeps_the_rest(sample_data, qwen_dir, tmp_path):
    from PIL import Image

    (tmp_path / "a.jpg").write_bytes((sample_data.parent / "images" / "coffee.jpg").read_bytes())
    Image.new("RGB", (32, 32)).save(tmp_path / "b.jpg")
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(hostile_lines()) + "\n")
    out = tmp_path / "shards"
    proc = subprocess.run([LMMDATA, "pack", src, "-o", out, "--tokenizer", qwen_dir, "--image-root", tmp_path,
                           "--image-tokens", str(N), "--rejects", tmp_path / "rejects.jsonl"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"] == 3
    assert manifest["skipped"] == {"bad_unicode": 1, "too_deep": 1, "bad_image_path": 2}
    reasons = [json.loads(r)["reason"] for r in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert sorted(reasons) == ["bad_image_path", "bad_image_path", "bad_unicode", "too_deep"]


def test_stale_staging_of_dead_processes_is_removed_live_ones_kept(qwen_dir, tmp_path):
    from lmmdata.staging import _host, remove_stale

    out = tmp_path / "shards"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [tmp_path / f".shards.tmp-{_host()}-{dead_pid}", tmp_path / f".shards.tmp-{dead_pid}",
                 tmp_path / f".shards.old-{_host()}-{dead_pid}"]
        keep = [tmp_path / f".shards.tmp-{_host()}-{live.pid}", tmp_path / f".shards.tmp-otherhost-{dead_pid}",
                tmp_path / f".other.tmp-{_host()}-{dead_pid}"]
        for d in stale + keep:
            d.mkdir()
            (d / "shard-00000.arrow").write_bytes(b"x" * 1000)
        assert sorted(remove_stale(out)) == sorted(stale)
        assert all(d.exists() for d in keep) and not any(d.exists() for d in stale)
        # the record writer cleans its own stale temp files the same way
        orphan = tmp_path / f".out.jsonl.tmp-{_host()}-{dead_pid}"
        orphan.write_text("half a file")
        proc = subprocess.run([LMMDATA, "mix-text", write_jsonl(tmp_path / "mm.jsonl", [llava(i) for i in range(5)]),
                               write_jsonl(tmp_path / "t.jsonl", [{"instruction": "Hi", "output": "Hello"}]),
                               "-o", tmp_path / "out.jsonl", "--ratio", "0.1"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert not orphan.exists() and (tmp_path / "out.jsonl").is_file()
    finally:
        live.kill()


def test_training_refuses_shards_that_are_not_as_packed(sample_shards, tmp_path):
    import shutil

    from lmmtrain.config import Stage1Config
    from lmmtrain.stages import train_stage

    broken = tmp_path / "shards"
    shutil.copytree(sample_shards, broken)
    shard = sorted(broken.glob("*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="changed or corrupt"):
        train_stage(small(Stage1Config, data=[str(broken)], out=str(tmp_path / "a"), max_steps=1, verify_shards=True))
    shard.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ConfigError, match="bytes, the manifest says"):
        train_stage(small(Stage1Config, data=[str(broken)], out=str(tmp_path / "b"), max_steps=1))


def test_a_10000_turn_record_is_rejected_in_linear_time(qwen_dir, tmp_path):
    """The tokenizer's own (jinja) template renders a conversation once, not every prefix of it."""
    from lmmdata.pack import PackConfig, pack
    from lmmdata.stats import Stats

    def record(turns: int) -> dict:
        conv = []
        for i in range(turns // 2):
            conv += [{"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": f"Answer {i}."}]
        return {"id": f"t{turns}", "conversations": conv}

    times = {}
    for turns in (1000, 10000):
        src = write_jsonl(tmp_path / f"{turns}.jsonl", [record(turns)])
        stats = Stats("pack", quiet=True)
        t0 = time.perf_counter()
        pack(PackConfig(inputs=[str(src)], out=str(tmp_path / f"o{turns}"), tokenizer=str(qwen_dir), image_tokens=N,
                        template="auto"), stats)
        times[turns] = time.perf_counter() - t0
        assert stats.skipped == {"too_long": 1}
    assert times[10000] < 30, times  # the quadratic renderer took about 17 minutes


def test_pixel_budget_is_checked_from_the_header_before_decoding(tmp_path):
    import resource

    from lmmdata.images import MAX_PIXELS, load_image
    from lmmdata.records import BadRecord

    (tmp_path / "bomb.png").write_bytes(png_claiming(20_000, 19_999))  # just under PIL's 400 MP guard
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadRecord) as e:
        load_image(tmp_path, "bomb.png")
    assert e.value.reason == "image_too_large" and "over the 64 MP budget (--max-image-pixels)" in str(e.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KB: nothing was decoded
    (tmp_path / "ok.png").write_bytes(png_claiming(100, 100))
    with pytest.raises(BadRecord) as e:  # within budget: decoded (and this one is truncated)
        load_image(tmp_path, "ok.png")
    assert e.value.reason == "corrupt_image"
    with pytest.raises(BadRecord, match="image_too_large|over the"):
        load_image(tmp_path, "ok.png", max_pixels=9_999)
    assert MAX_PIXELS == 64_000_000


def test_any_text_length_costs_bounded_time(qwen_dir, tmp_path):
    """A 5 MB answer is too_long before tokenizing; with --truncate a text-only one is cut first."""
    from lmmdata.pack import PackConfig, pack
    from lmmdata.stats import Stats

    huge = {"id": "huge", "conversations": [{"from": "human", "value": "Tell me everything."},
                                            {"from": "gpt", "value": "word " * 1_000_000}]}
    src = write_jsonl(tmp_path / "in.jsonl", [huge, llava(1)])
    for truncate, skipped in ((False, {"too_long": 1}), (True, {})):
        stats = Stats("pack", quiet=True)
        t0 = time.perf_counter()
        m = pack(PackConfig(inputs=[str(src)], out=str(tmp_path / f"o{truncate}"), tokenizer=str(qwen_dir),
                            image_tokens=N, truncate=truncate), stats)
        assert time.perf_counter() - t0 < 30 and dict(stats.skipped) == skipped and m["samples"] == 2 - len(skipped)
    assert stats.flags["truncated"] == 1


def test_a_line_over_the_record_limit_is_skipped_without_holding_it(tmp_path, monkeypatch):
    from lmmdata import jsonio

    monkeypatch.setattr(jsonio, "MAX_ITEM", 1 << 20)
    big = json.dumps({"id": "big", "x": "y" * (3 << 20)})
    for fmt in ("jsonl", "json"):
        path = tmp_path / f"in.{fmt}"
        lines = [json.dumps(llava(0)), big, json.dumps(llava(1))]
        path.write_text("\n".join(lines) + "\n" if fmt == "jsonl" else "[" + ",\n".join(lines) + "]")
        kinds = [getattr(it, "reason", None) or it[0]["id"] for it in iter_items(path)]
        assert kinds == ["r0", "too_large", "r1"], (fmt, kinds)


def test_path_strings_no_filesystem_takes_are_setting_errors(tmp_path):
    from lmmdata.jsonio import check_record_files

    good = write_jsonl(tmp_path / "in.jsonl", [llava(0)])
    for out in ("a\0b.jsonl", "broken\ud800.jsonl"):
        with pytest.raises(ConfigError, match="record file .* is not"):
            check_record_files([good], out)
