import json
import os
import subprocess
import sys

import pytest

from lmmdata import jsonio
from lmmdata.jsonio import BadItem, RecordWriter, iter_items

RECORDS = [
    {"id": "a", "image": "x.jpg", "conversations": [{"from": "human", "value": "<image>\n你好？"}, {"from": "gpt", "value": "好 \"q\" \\ \n end"}], "extra": {"k": [1, 2.5, None, True]}},
    {"id": 7, "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
    {"id": "c", "image": ["a.png", "b.png"], "conversations": [], "z": 1e-9},
]


def items(path):
    return list(iter_items(path))


@pytest.mark.parametrize("ext", ["json", "jsonl"])
def test_round_trip_is_byte_stable(tmp_path, ext):
    first = tmp_path / f"a.{ext}"
    with RecordWriter(first) as w:
        for r in RECORDS:
            w.write(r)
    back = [v for v, _ in items(first)]
    assert back == RECORDS
    second = tmp_path / f"b.{ext}"
    with RecordWriter(second) as w:
        for r in back:
            w.write(r)
    assert first.read_bytes() == second.read_bytes()
    if ext == "json":
        assert json.loads(first.read_text(encoding="utf-8")) == RECORDS


def test_cross_format_round_trip(tmp_path):
    def write(path, rows):
        with RecordWriter(path) as w:
            for r in rows:
                w.write(r)
        return path

    j = write(tmp_path / "a.json", RECORDS)
    l = write(tmp_path / "b.jsonl", [v for v, _ in items(j)])
    j2 = write(tmp_path / "c.json", [v for v, _ in items(l)])
    assert j.read_bytes() == j2.read_bytes()


def test_empty_list_round_trip(tmp_path):
    p = tmp_path / "e.json"
    with RecordWriter(p):
        pass
    assert p.read_text() == "[]\n" and items(p) == []


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_tiny_chunks_match_json_load(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(jsonio, "CHUNK", chunk)
    p = tmp_path / "a.json"
    p.write_text(json.dumps(RECORDS * 3, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    got = items(p)
    assert [v for v, _ in got] == RECORDS * 3
    assert [w.index for _, w in got] == list(range(9))
    lines = p.read_text(encoding="utf-8").splitlines()
    for _, where in got:  # line numbers point at the opening brace
        assert lines[where.line - 1].strip() == "{"


def test_malformed_record_in_list_is_reported_and_rest_read(tmp_path):
    good = [{"id": i, "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]} for i in range(5)]
    text = "[\n" + ",\n".join(json.dumps(r) for r in good) + "\n]\n"
    broken = text.replace('{"id": 2, "conversations": [{"from"', '{"id": 2, "conversations": [{from', 1)
    p = tmp_path / "a.json"
    p.write_text(broken)
    got = items(p)
    bad = [g for g in got if isinstance(g, BadItem)]
    ok = [g[0]["id"] for g in got if not isinstance(g, BadItem)]
    assert ok == [0, 1, 3, 4]
    assert len(bad) == 1 and bad[0].reason == "malformed_json" and bad[0].where.line == 4


def test_missing_comma_is_reported(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[{"id": 1, "conversations": []}\n {"id": 2, "conversations": []}, {"id": 3, "conversations": []}]')
    got = items(p)
    assert [g[0]["id"] for g in got if not isinstance(g, BadItem)] == [1, 3]
    assert [g.reason for g in got if isinstance(g, BadItem)] == ["malformed_json"]


def test_truncated_json_keeps_complete_records(tmp_path):
    p = tmp_path / "a.json"
    full = json.dumps(RECORDS, ensure_ascii=False)
    p.write_text(full[: full.index('"id": "c"') + 12], encoding="utf-8")
    got = items(p)
    assert [g[0] for g in got[:2]] == RECORDS[:2]
    assert isinstance(got[2], BadItem) and got[2].reason == "truncated"
    assert len(got) == 3


def test_not_a_list(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('{"id": 1}')
    [bad] = items(p)
    assert bad.reason == "malformed_json" and ".jsonl" in bad.message


def test_jsonl_bad_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"id": 1}\n{"id": 2,\n\n\xff\xfe\n{"id": 3}\n{"id": 4')
    got = items(p)
    assert [g[0]["id"] for g in got if not isinstance(g, BadItem)] == [1, 3]
    assert [(g.reason, g.where.line) for g in got if isinstance(g, BadItem)] == [
        ("malformed_json", 2), ("bad_encoding", 4), ("truncated", 6)]


def test_unknown_extension_is_a_setting_error(tmp_path):
    with pytest.raises(ValueError, match="use .json"):
        items_path = tmp_path / "a.csv"
        items_path.write_text("x")
        list(iter_items(items_path))


def test_interrupted_writer_keeps_previous_output(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_text("old\n")
    with pytest.raises(RuntimeError):
        with RecordWriter(p) as w:
            w.write({"id": 1})
            raise RuntimeError("killed")
    assert p.read_text() == "old\n"
    assert [f.name for f in tmp_path.iterdir()] == ["out.jsonl"]


def test_streaming_read_memory_is_bounded(tmp_path):
    """Reading a ~150 MB JSON list must not load it: peak RSS grows < 60 MB."""
    p = tmp_path / "big.json"
    rec = json.dumps({"id": "x" * 8, "image": "coco/train2017/000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\n" + "What is in the picture? " * 20},
        {"from": "gpt", "value": "A bus. " * 100}]})
    n = 150_000_000 // len(rec)
    with open(p, "w") as fh:
        fh.write("[")
        fh.write(",\n".join([rec] * n))
        fh.write("]")
    code = (
        "import resource,sys; from lmmdata.jsonio import iter_items\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "n = sum(1 for _ in iter_items(sys.argv[1]))\n"
        "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == n
    assert int(out[1]) < 60_000, f"RSS grew by {int(out[1]) / 1000:.0f} MB reading a {os.path.getsize(p) >> 20} MB file"
