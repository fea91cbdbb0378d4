import pytest

from lmmdata.protect import compile_patterns, join, segment

P = compile_patterns()


@pytest.mark.parametrize("text", [
    "<image>\nWhat is in the picture?",
    "Image 1: <image>\nImage 2: <image>\nCompare them.",
    "Run `pip install x` then see https://example.org/a_b?c=1.",
    "Steps:\n1. Open the box.\n2) Take it out.\n- done\n* also",
    "```python\nprint('hi')\n```\nThat prints hi.",
    "  leading and trailing  ",
    "???",
    "",
])
def test_segment_is_lossless_and_protects(text):
    pieces = segment(text, P)
    assert "".join(p.text for p in pieces) == text
    for p in pieces:
        if p.translate:
            assert "<image>" not in p.text and "\n" not in p.text and "`" not in p.text and "://" not in p.text
            assert p.text == p.text.strip()


def test_join_replaces_only_translatable_pieces():
    text = "Image 1: <image>\n1. What is `x` at https://a.b/c?\n<im_start>Done."
    pieces = segment(text, P)
    assert [p.text for p in pieces if p.translate] == ["Image 1:", "What is", "at", "Done."]
    out = join(pieces, {"Image 1:": "图1：", "What is": "什么是", "at": "在", "Done.": "完成。"})
    assert out == "图1： <image>\n1. 什么是 `x` 在 https://a.b/c?\n<im_start>完成。"


def test_user_regex_and_bad_regex():
    p = compile_patterns([r"\bCOCO-\d+\b"])
    assert [x.text for x in segment("See COCO-12 now", p) if not x.translate] == [" ", "COCO-12", " "]
    with pytest.raises(ValueError, match="--protect"):
        compile_patterns(["(unclosed"])
