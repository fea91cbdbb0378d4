"""The quality gate's flags and the LLM sentinel lines, on exact strings."""

from pathlib import Path

from lmmdata.backends.openai import DEFAULT_PROMPT, load_prompt
from lmmdata.protect import LATIN, compile_patterns, join, segment, with_sentinels
from lmmdata.quality import flags

ROOT = Path(__file__).resolve().parents[1]


def test_flags_name_what_llm_translators_get_wrong():
    src = "Run <x1/> and then open <x2/> for the details."
    assert flags(src, "运行 <x1/>，然后打开 <x2/> 查看详情。", "zh") == set()
    assert flags(src, "运行，然后打开 <x2/> 查看详情。", "zh") == {"sentinels"}
    assert flags(src, "运行 <x1/> <x1/>，然后打开 <x2/> 查看详情。", "zh") == {"sentinels"}
    assert flags(src, "打开 <x2/> 之后运行 <x1/> 查看详情。", "zh") == {"sentinel_order"}
    assert flags(src, "Here is the translation: 运行 <x1/>，然后打开 <x2/> 查看详情。", "zh") == {"chatter", "latin"}
    assert "chatter" in flags(src, "以下是翻译：运行 <x1/>，然后打开 <x2/> 查看详情。", "zh")
    assert "chatter" in flags(src, "运行 <x1/>，然后打开 <x2/> 查看详情。\nNote: kept the tags.", "zh")
    assert "repetition" in flags("The test is negative.", "检测结果阴性阳性阳性阳性阳性阳性。", "zh")
    assert flags("Ha ha ha ha ha, very funny.", "哈哈哈哈哈，很好笑。", "zh") == set()  # the source repeats too
    assert flags(src, src, "zh") == {"latin"}  # untranslated
    assert flags("A cat sits on the sofa near the window.", "猫", "zh") == {"length_ratio"}
    assert flags("A cat.", "  ", "zh") == {"empty"}


def test_sentinel_lines_keep_structure_and_spans():
    pat = compile_patterns()
    text = "1. The bus <b>is</b> red 🚌.\n2. 这是一只猫。\n```py\nx = 1\n```\nSee `x` at https://x.org/a."
    pieces = with_sentinels(segment(text, pat, LATIN))
    units = [p for p in pieces if p.translate]
    assert [(p.text, p.spans) for p in units] == [
        ("The bus <x1/>is<x2/> red", ("<b>", "</b>")), ("See <x1/> at", ("`x`",))]  # protected line ends stay out
    assert join(pieces, {p.text: p.text for p in units}) == text  # an answer that keeps the sentinels
    swapped = {units[0].text: "<x2/>公共汽车<x1/>是红色", units[1].text: "见 <x1/>："}
    assert join(pieces, swapped) == ("1. </b>公共汽车<b>是红色 🚌.\n2. 这是一只猫。\n```py\nx = 1\n```\n"
                                     "见 `x`： https://x.org/a.")  # spans go back by number


def test_shipped_prompts_load():
    assert load_prompt(str(ROOT / "pipelines/translate/qwen.yaml")) == DEFAULT_PROMPT
    hy = load_prompt(str(ROOT / "pipelines/translate/hunyuan_mt.yaml"))
    assert hy["system"] == "" and "{text}" in hy["user"] and "{problems}" in hy["retry"]
