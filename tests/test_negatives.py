import re
from collections import Counter

import pytest

from conftest import llava, read_jsonl, write_jsonl
from lmmdata.negatives import NegativesConfig, _norm, make_negatives

CAPTIONS = [
    "A red double-decker bus parked on a city street.",
    "A red bus driving down a busy city street.",
    "Two cats sleeping on a pink blanket next to remotes.",
    "A man riding a wave on top of a surfboard.",
    "A bowl of fruit with bananas and oranges on a table.",
    "A close-up of a bowl with oranges and bananas.",
    "An astronaut in a white suit holding a flag.",
    "A rocket launching into a clear blue sky.",
    "A cup of coffee on a saucer with latte art.",
    "A grey cat looking at the camera from a window.",
]


@pytest.fixture
def caps_file(tmp_path):
    rows = [llava(i, f"img/{i % 10}.jpg", CAPTIONS[i % 10]) for i in range(40)]
    rows.append(llava(99, "img/0.jpg", CAPTIONS[1].upper()))  # an identical (normalised) caption of another image
    rows.append(llava(100, None))  # text-only: passed through, not captioned
    rows.append(llava(101, "img/3.jpg", "Yes."))  # a short VQA answer is not a caption
    return write_jsonl(tmp_path / "caps.jsonl", rows)


def run(tmp_path, src, **kw):
    out = tmp_path / "neg.jsonl"
    stats = make_negatives(NegativesConfig(inp=str(src), out=str(out), **kw))
    return read_jsonl(out), stats


def image_captions(rows):
    own = {}
    for r in rows:
        if not r.get("source"):
            own.setdefault(r.get("image"), set()).add(_norm(r["conversations"][1]["value"]))
    return own


@pytest.mark.parametrize("hard", [False, True])
def test_no_negative_pairs_an_image_with_its_own_or_identical_caption(tmp_path, caps_file, hard):
    rows, stats = run(tmp_path, caps_file, per_record=3, hard=hard, lang="en")
    src = {r["id"]: r for r in rows if not r.get("source")}
    own = image_captions(rows)
    negs = [r for r in rows if r.get("negative") is True]
    assert len(negs) == 41 * 3
    for n in negs:
        b = src[n["caption_from"]]
        assert b["image"] != n["image"]
        shown = _norm(b["conversations"][1]["value"])
        assert shown not in own[n["image"]]
        assert b["conversations"][1]["value"] in n["conversations"][0]["value"]
        assert n["conversations"][1]["value"].startswith(("No", "That is not correct"))
        assert n["conversations"][0]["value"].startswith("<image>\n")
    # per record: distinct captions
    by_src = Counter((n["negative_of"], _norm(src[n["caption_from"]]["conversations"][1]["value"])) for n in negs)
    assert max(by_src.values()) == 1


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5])
def test_positive_share_as_asked(tmp_path, caps_file, share):
    rows, stats = run(tmp_path, caps_file, per_record=2, positives=share)
    gen = [r for r in rows if r.get("source") == "negatives"]
    pos = [r for r in gen if r["negative"] is False]
    assert abs(len(pos) - share * len(gen)) <= 1
    for p in pos:
        assert p["caption_from"] == p["negative_of"]
    assert stats.counts["passed_through"] == 43


def test_same_seed_identical_and_seed_changes_output(tmp_path, caps_file):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    c = tmp_path / "c.jsonl"
    for path, seed in ((a, 5), (b, 5), (c, 6)):
        make_negatives(NegativesConfig(inp=str(caps_file), out=str(path), seed=seed, hard=True))
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_hard_negatives_are_closer_than_random(tmp_path, caps_file):
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(analyzer="char", ngram_range=(1, 3), alternate_sign=False)

    def mean_sim(rows):
        src = {r["id"]: r["conversations"][1]["value"] for r in rows if not r.get("source")}
        negs = [r for r in rows if r.get("negative") is True]
        a = vec.transform([src[n["negative_of"]].lower() for n in negs])
        b = vec.transform([src[n["caption_from"]].lower() for n in negs])
        return float(a.multiply(b).sum(axis=1).mean())

    hard, _ = run(tmp_path, caps_file, hard=True, only_new=False)
    rand, _ = run(tmp_path, caps_file, hard=False)
    assert mean_sim(hard) > mean_sim(rand) + 0.05


def test_chinese_templates_and_provenance(tmp_path):
    zh = ["一辆红色的双层巴士停在城市街道上。", "两只猫睡在粉色的毯子上。", "一个人在冲浪板上冲浪。", "一碗水果，有香蕉和橙子。"]
    src = write_jsonl(tmp_path / "zh.jsonl", [llava(i, f"{i}.jpg", zh[i] * 2, lang="zh", extra_key=i) for i in range(4)])
    rows, _ = run(tmp_path, src, only_new=True, positives=0.0)
    assert len(rows) == 4
    for r in rows:
        assert r["lang"] == "zh" and r["source"] == "negatives" and r["extra_key"] == int(r["negative_of"][1:])
        assert re.search(r"[\u4e00-\u9fff]", r["conversations"][0]["value"].split("\n")[1][:4])
        assert zh[int(r["negative_of"][1:])] in r["conversations"][1]["value"]


def test_only_answers_to_description_prompts_are_captions(tmp_path):
    vqa = {"id": "vqa", "image": "img/9.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat is the man holding in his right hand?"},
        {"from": "gpt", "value": "He is holding a red umbrella over his head."}]}
    zh = {"id": "zh", "image": "img/8.jpg", "conversations": [
        {"from": "human", "value": "<image>\n请简要描述这张图片。"}, {"from": "gpt", "value": "一只橘色的猫躺在窗台上晒太阳。"}]}
    why = {"id": "why", "image": "img/7.jpg", "conversations": [
        {"from": "human", "value": "<image>\nCan you explain why the man is holding an umbrella?"},
        {"from": "gpt", "value": "Because it is raining heavily on the street."}]}
    rows = [llava(i, f"img/{i}.jpg", CAPTIONS[i]) for i in range(3)] + [vqa, zh, why]
    src = write_jsonl(tmp_path / "mixed.jsonl", rows)
    out, stats = run(tmp_path, src, per_record=1, positives=0.0, only_new=True)
    assert stats.extra["captioned"] == 4
    assert {r["negative_of"] for r in out} == {"r0", "r1", "r2", "zh"}
    assert all("umbrella" not in r["conversations"][0]["value"] for r in out)
    out, stats = run(tmp_path, src, per_record=1, positives=0.0, only_new=True, any_first_answer=True)
    assert stats.extra["captioned"] == 6 and {"vqa", "why"} <= {r["negative_of"] for r in out}


LLAVA_DESCRIBE_PROMPTS = [  # LLaVA-Pretrain (BLIP captions) and LLaVA-Instruct "detail" prompts
    "Describe the image concisely.", "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.", "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.", "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.", "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.", "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.", "Describe the following image in detail",
    "Give an elaborate explanation of the image you see", "Share a comprehensive rundown of the presented image",
    "Offer a thorough analysis of the image", "Explain the various aspects of the image before you",
    "Clarify the contents of the displayed image with great detail",
    "Characterize the image using a well-detailed description", "Break down the elements of the image in a detailed manner",
    "Walk through the important details of the image", "Portray the image with a rich, descriptive narrative",
    "Narrate the contents of the image with precision", "Analyze the image in a comprehensive and detailed manner",
    "Illustrate the image through a descriptive explanation", "Examine the image closely and share its details",
    "Write an exhaustive depiction of the given image", "请简要描述这张图片。", "简要说明这张图片的内容", "这张图片里有什么？请概括。",
]
NOT_DESCRIBE = ["What is the man holding in his right hand?", "Can you explain why the man is holding an umbrella?",
                "What might be the reason for the crowd?", "How many people are there?",
                "What color is the bus?\nAnswer the question using a single word or phrase.",
                "图中的男人手里拿着什么？", "为什么这个人拿着伞？请解释原因。"]


def test_description_prompts_are_recognised():
    from lmmdata.negatives import DESCRIBE

    assert [q for q in LLAVA_DESCRIBE_PROMPTS if not DESCRIBE.search(q)] == []
    assert [q for q in NOT_DESCRIBE if DESCRIBE.search(q)] == []
