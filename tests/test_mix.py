import json
from collections import Counter

import pytest

from conftest import llava, read_jsonl, write_jsonl
from lmmdata.config import ConfigError
from lmmdata.mix import MixConfig, mix_text


def run(tmp_path, mm, text, **kw):
    out = tmp_path / "out.jsonl"
    stats = mix_text(MixConfig(mm=str(mm), text=[str(t) for t in text], out=str(out), **kw))
    return read_jsonl(out), stats


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.2, 0.33, 0.4])
def test_ratio_is_exact_to_one_record(tmp_path, mm_file, alpaca_file, ratio):
    rows, stats = run(tmp_path, mm_file, [alpaca_file], ratio=ratio)
    n_text = sum(r.get("source") == "text" for r in rows)
    assert len(rows) - n_text == 40
    assert abs(n_text - ratio * len(rows)) <= 1
    assert stats.counts["added_text"] == n_text and stats.extra["actual_ratio"] == n_text / len(rows)


def test_without_replacement_keys_kept_and_shuffled(tmp_path, mm_file, alpaca_file):
    rows, _ = run(tmp_path, mm_file, [alpaca_file], ratio=0.4, seed=3)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    text = [r for r in rows if r.get("source") == "text"]
    assert all("image" not in r and r["id"].startswith("alpaca-") and "extra" in r for r in text)
    assert sorted(r["keep"] for r in rows if "keep" in r) == list(range(40))
    assert ids[:40] != [f"r{i}" for i in range(40)]


def test_same_seed_same_bytes_other_seed_other_order(tmp_path, mm_file, alpaca_file):
    cfg = dict(mm=str(mm_file), text=[str(alpaca_file)], ratio=0.3)
    outs = []
    for i, seed in enumerate([1, 1, 2]):
        out = tmp_path / f"o{i}.jsonl"
        mix_text(MixConfig(out=str(out), seed=seed, **cfg))
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]


def test_many_buckets_keep_every_record(tmp_path, mm_file, alpaca_file):
    rows, stats = run(tmp_path, mm_file, [alpaca_file], ratio=0.25, bucket_bytes=500)
    assert sum("image" in r for r in rows) == 40 and len(rows) == 53
    assert stats.extra["shuffle_buckets"] > 10


def test_not_enough_text_is_a_clear_error(tmp_path, mm_file, alpaca_file):
    with pytest.raises(ConfigError, match="--allow-repeat"):
        run(tmp_path, mm_file, [alpaca_file], ratio=0.6)
    assert not (tmp_path / "out.jsonl").exists()


def test_allow_repeat_makes_unique_ids(tmp_path, mm_file, alpaca_file):
    rows, _ = run(tmp_path, mm_file, [alpaca_file], ratio=0.75, allow_repeat=True)
    text = [r for r in rows if r.get("source") == "text"]
    assert len(text) == 120
    assert len({r["id"] for r in text}) == 120
    assert Counter(r["id"].split("#")[0] for r in text) == Counter({f"alpaca-{i}": 4 for i in range(30)})


def test_bad_records_are_counted_and_rest_written(tmp_path, alpaca_file):
    mm = tmp_path / "mm.jsonl"
    mm.write_text("\n".join([json.dumps(llava(0, "a.jpg")), "{bad json", json.dumps({"id": "x", "conversations": []}),
                             json.dumps(llava(1, "b.jpg"))]) + "\n")
    rows, stats = run(tmp_path, mm, [alpaca_file], ratio=0.5, source="file")
    assert stats.skipped == Counter({"malformed_json": 1, "empty_conversation": 1})
    assert len(rows) == 4 and {r.get("source") for r in rows} == {None, "alpaca.json"}


def test_multiple_text_files(tmp_path, mm_file, alpaca_file):
    sg = write_jsonl(tmp_path / "sg.jsonl", [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]} for i in range(20)])
    rows, _ = run(tmp_path, mm_file, [alpaca_file, sg], ratio=0.5)
    ids = {r["id"] for r in rows if r.get("source") == "text"}
    assert len(ids) == 40 and all(i.startswith(("alpaca-", "sg-")) for i in ids)
