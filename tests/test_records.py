import copy

import pytest

from lmmdata.records import BadRecord, validate
from lmmdata.textsets import to_llava


def conv(*turns):
    return [{"from": r, "value": v} for r, v in turns]


def test_single_image_without_placeholder_gets_one_prepended():
    rec = {"id": "1", "image": "a.jpg", "conversations": conv(("human", "What is it?"), ("gpt", "A cat."))}
    out = validate(rec)
    assert out["conversations"][0]["value"] == "<image>\nWhat is it?"


def test_valid_multi_image_multi_turn_with_system_and_extra_keys():
    rec = {"id": "m", "image": ["a.jpg", "b.jpg"], "meta": {"x": 1},
           "conversations": conv(("system", "Be brief."), ("human", "<image>\n<image>\nCompare."), ("gpt", "Same."),
                                 ("human", "Sure?"), ("gpt", "Yes."))}
    before = copy.deepcopy(rec)
    assert validate(rec) == before
    assert list(rec) == ["id", "image", "meta", "conversations"]


@pytest.mark.parametrize("rec, reason", [
    ([1, 2], "not_an_object"),
    ({"id": 1}, "missing_conversations"),
    ({"id": 1, "conversations": "hi"}, "wrong_type"),
    ({"id": 1, "conversations": []}, "empty_conversation"),
    ({"id": 1, "image": 5, "conversations": conv(("human", "q"), ("gpt", "a"))}, "bad_image_field"),
    ({"id": 1, "image": ["a", ""], "conversations": conv(("human", "<image><image>"), ("gpt", "a"))}, "bad_image_field"),
    ({"id": 1, "conversations": conv(("human", "q"), ("robot", "a"))}, "unknown_role"),
    ({"id": 1, "conversations": conv(("human", "q"), ("gpt", "  "))}, "empty_turn"),
    ({"id": 1, "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}]}, "wrong_type"),
    ({"id": 1, "conversations": [{"from": "human"}]}, "wrong_type"),
    ({"id": 1, "conversations": conv(("gpt", "a"), ("human", "q"))}, "bad_turn_order"),
    ({"id": 1, "conversations": conv(("human", "q"), ("human", "q"), ("gpt", "a"))}, "bad_turn_order"),
    ({"id": 1, "conversations": conv(("human", "q"), ("gpt", "a"), ("human", "q2"))}, "bad_turn_order"),
    ({"id": 1, "conversations": conv(("human", "q"), ("gpt", "a"), ("system", "s"), ("gpt", "a"))}, "bad_turn_order"),
    ({"id": 1, "image": ["a", "b"], "conversations": conv(("human", "<image> q"), ("gpt", "a"))}, "placeholder_mismatch"),
    ({"id": 1, "conversations": conv(("human", "<image> q"), ("gpt", "a"))}, "placeholder_mismatch"),
    ({"id": 1, "image": "a", "conversations": conv(("human", "<image> q"), ("gpt", "<image>"))}, "placeholder_in_answer"),
])
def test_bad_records_have_a_reason(rec, reason):
    with pytest.raises(BadRecord) as e:
        validate(rec)
    assert e.value.reason == reason and e.value.message


def test_alpaca_to_llava():
    out = to_llava({"instruction": "Translate", "input": "hello", "output": "你好", "cat": "t"}, "a-0")
    assert out == {"id": "a-0", "conversations": conv(("human", "Translate\n\nhello"), ("gpt", "你好")), "cat": "t"}
    assert to_llava({"instruction": "Hi", "input": "", "output": "Yo", "id": "x"}, "a-1")["conversations"][0]["value"] == "Hi"


def test_sharegpt_and_messages_to_llava():
    sg = {"id": "s", "conversations": [{"from": "system", "value": "S"}, {"from": "user", "value": "Q"}, {"from": "chatgpt", "value": "A"}]}
    assert to_llava(sg, "d")["conversations"] == conv(("system", "S"), ("human", "Q"), ("gpt", "A"))
    msg = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Q1"}]}, {"role": "assistant", "content": "A1"}], "lang": "en"}
    assert to_llava(msg, "m-3") == {"id": "m-3", "conversations": conv(("human", "Q1"), ("gpt", "A1")), "lang": "en"}


@pytest.mark.parametrize("raw, reason", [
    ({"foo": 1}, "unknown_format"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}, {"role": "assistant", "content": "a"}]}, "not_text_only"),
    ({"instruction": "<image> what?", "output": "x"}, "not_text_only"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "unknown_role"),
    ({"instruction": "x", "output": ""}, "empty_turn"),
])
def test_bad_text_records(raw, reason):
    with pytest.raises(BadRecord) as e:
        to_llava(raw, "x")
    assert e.value.reason == reason
