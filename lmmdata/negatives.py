"""`make-negatives`: mismatched image/caption samples against hallucination.

For each captioned record A (one image, a describing answer) it builds
`per_record` negatives: A's image with the caption of another record B, asking
whether the description fits; the answer says no and what A's image shows.
A share `positives` of all generated samples are matched pairs answered yes, so
the model does not learn to always say no.

Guarantees: a negative never pairs an image with a caption of the same image
(same normalised path) nor with a caption identical (after normalisation) to
one of that image's own captions; positives / generated = `positives` to within
one record; same input and seed -> identical output. Captions are held in
memory (a few hundred bytes each); records stream.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

import numpy as np

from .config import ConfigError
from .jsonio import RecordWriter, check_record_files
from .progress import track
from .records import IMAGE, images_of, is_cjk, iter_valid
from .stats import Stats

Q = {
    "en": [
        '{img}\nDoes this description match the image? "{cap}"',
        "{img}\nIs the following caption an accurate description of this picture?\n{cap}",
        '{img}\nSomeone described this image as: "{cap}" Is that correct?',
        "{img}\nCheck this description against the image: {cap}\nDoes it fit?",
    ],
    "zh": [
        "{img}\n这段描述与图片相符吗？“{cap}”",
        "{img}\n下面的说明是否准确地描述了这张图片？\n{cap}",
        "{img}\n有人这样描述这张图片：“{cap}” 这个描述对吗？",
        "{img}\n请对照图片判断这段描述是否正确：{cap}",
    ],
}
NO = {
    "en": [
        "No, the description does not match the image. The image actually shows {real}.",
        "No. That caption describes a different picture; this image shows {real}.",
        "That is not correct. What the image really shows is {real}.",
    ],
    "zh": [
        "不相符。这段描述说的是另一张图片，这张图片实际上是：{real}。",
        "不对，描述与图片内容不符。图片中显示的是：{real}。",
        "这段描述不准确。图片真正展示的是：{real}。",
    ],
}
# The first answer is a caption only when the first question asks for a description: the
# LLaVA-Pretrain / LLaVA-Instruct "detail" prompts and their Chinese translations. An answer to
# "What is the man holding?" is not a description of the image.
DESCRIBE = re.compile(
    r"describ|descript|caption|summar|rundown|"
    r"(?:explain|explanation|interpret|depict|portray|narrat|analy[sz]|account|characteri[sz]|illustrat|"
    r"walk through|break down|elements|clarify|examine)[^.?!\n]{0,40}\b(?:image|picture|photo|scene)|"
    r"what (?:is|'s|are) (?:in|shown in|happening in) (?:this|the) (?:image|picture|photo)|what do you see|"
    r"描述|描绘|描写|概括|总结|叙述|讲述|标题|(?:说明|解释|介绍|解说)[^。？！\n]{0,12}(?:图|画面|照片)|"
    r"图中有什么|图片中有什么|图片里有什么|画面中有什么",
    re.IGNORECASE,
)
YES = {
    "en": [
        "Yes, the description matches the image: it shows {real}.",
        "Yes, that is an accurate description of the image.",
        "Yes. The caption fits: the image shows {real}.",
    ],
    "zh": [
        "相符。图片显示的正是：{real}。",
        "是的，这段描述准确地描述了这张图片。",
        "对，描述与图片一致：{real}。",
    ],
}


LANGS = ("zh", "en", "auto")


@dataclass
class NegativesConfig:
    """Options of `lmmdata make-negatives`."""

    inp: str
    out: str
    per_record: int = 1
    positives: float = 0.25  # share of generated samples that are matched (answer yes)
    hard: bool = False  # pick lexically close captions (char n-gram TF) instead of random ones
    hard_pool: int = 2048  # candidates scored per query in --hard mode
    lang: str = "auto"  # zh | en | auto (record's "lang" key, else CJK in the caption)
    seed: int = 0
    only_new: bool = False  # write only generated records (default: input records + generated)
    caption_key: str | None = None  # take the caption from this key instead of the first answer
    any_first_answer: bool = False  # first answer is a caption even when the question does not ask to describe
    min_caption_chars: int = 15  # shorter first answers (VQA "Yes", "Red") are not captions
    rejects: str | None = None


@dataclass
class _Cap:
    index: int  # position among valid input records
    id: str
    image: str
    text: str
    norm: str
    lang: str


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def _in_sentence(caption: str, lang: str) -> str:
    """A caption shaped to stand inside an answer sentence."""
    c = caption.strip().rstrip(".。!！")
    if lang == "en" and len(c) > 1 and c[0].isupper() and not c[1].isupper():
        c = c[0].lower() + c[1:]
    return c


def _caption_of(rec: dict, cfg: NegativesConfig) -> str | None:
    if len(images_of(rec)) != 1:
        return None
    if cfg.caption_key:
        cap = rec.get(cfg.caption_key)
    else:
        conv = rec["conversations"]
        question = next((t["value"] for t in conv if t["from"] == "human"), "")
        if not cfg.any_first_answer and not DESCRIBE.search(question.replace(IMAGE, "")):
            return None
        cap = next((t["value"] for t in conv if t["from"] == "gpt"), None)
    if not isinstance(cap, str) or IMAGE in cap or len(cap.strip()) < cfg.min_caption_chars:
        return None
    return cap.strip()


def _lang(rec: dict, caption: str, cfg: NegativesConfig) -> str:
    if cfg.lang != "auto":
        return cfg.lang
    if rec.get("lang") in ("zh", "en"):
        return rec["lang"]
    return "zh" if is_cjk(caption) else "en"


def _pick_random(caps: list[_Cap], own: dict[str, set[str]], a: _Cap, k: int, rng: random.Random) -> list[_Cap]:
    picked: list[_Cap] = []
    seen: set[str] = set()
    for _ in range(50 * k):
        b = caps[rng.randrange(len(caps))]
        if b.image != a.image and b.norm not in own[a.image] and b.norm not in seen:
            picked.append(b)
            seen.add(b.norm)
            if len(picked) == k:
                break
    return picked


def _pick_hard(caps: list[_Cap], own: dict[str, set[str]], k: int, pool: int, rng: random.Random) -> list[list[_Cap]]:
    """For each caption, the k most similar valid captions among a random pool."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(analyzer="char", ngram_range=(1, 3), n_features=1 << 20, alternate_sign=False, norm="l2")
    X = vec.transform([c.text.lower() for c in caps])
    out: list[list[_Cap]] = []
    for start in range(0, len(caps), 512):
        idx = rng.sample(range(len(caps)), min(pool, len(caps)))
        sims = (X[start : start + 512] @ X[idx].T).toarray()
        for row, a in zip(sims, caps[start : start + 512]):
            picked, seen = [], set()
            for j in np.argsort(-row, kind="stable"):
                b = caps[idx[j]]
                if b.image != a.image and b.norm not in own[a.image] and b.norm not in seen:
                    picked.append(b)
                    seen.add(b.norm)
                    if len(picked) == k:
                        break
            out.append(picked)
    return out


def _sample(a: _Cap, b: _Cap, k: int, positive: bool, base: dict, rng: random.Random) -> dict:
    lang = a.lang
    q = rng.choice(Q[lang]).format(img=IMAGE, cap=b.text)
    ans = rng.choice(YES[lang] if positive else NO[lang]).format(real=_in_sentence(a.text, lang))
    rec = {k2: v for k2, v in base.items() if k2 != "conversations"}
    rec.update(
        id=f"{a.id}-{'pos' if positive else 'neg'}{k}",
        conversations=[{"from": "human", "value": q}, {"from": "gpt", "value": ans}],
        source="negatives",
        negative=not positive,
        negative_of=a.id,
        caption_from=b.id,
        lang=lang,
    )
    return rec


def make_negatives(cfg: NegativesConfig, stats: Stats | None = None) -> Stats:
    """Run make-negatives; returns the stats."""
    if cfg.per_record < 0:
        raise ConfigError(f"--per-record must be >= 0, got {cfg.per_record}")
    if not 0 <= cfg.positives < 1:
        raise ConfigError(f"--positives must be in [0, 1), got {cfg.positives}")
    if cfg.lang not in LANGS:
        raise ConfigError(f"--lang must be one of {', '.join(LANGS)}, got {cfg.lang!r}")
    check_record_files([cfg.inp], cfg.out)
    stats = stats or Stats("make-negatives")
    rng = random.Random(cfg.seed)
    caps: list[_Cap] = []
    for i, (rec, _) in enumerate(iter_valid([cfg.inp], Stats("scan", quiet=True))):
        cap = _caption_of(rec, cfg)
        if cap is not None:
            image = os.path.normpath(images_of(rec)[0])
            caps.append(_Cap(i, str(rec.get("id", i)), image, cap, _norm(cap), _lang(rec, cap, cfg)))
    if len({c.image for c in caps}) < 2 and cfg.per_record:
        raise ConfigError(f"{cfg.inp}: needs captioned records of at least two different images (found {len(caps)} captioned)")
    own: dict[str, set[str]] = {}
    for c in caps:
        own.setdefault(c.image, set()).add(c.norm)
    if cfg.hard:
        picks = _pick_hard(caps, own, cfg.per_record, cfg.hard_pool, rng)
    else:
        picks = [_pick_random(caps, own, a, cfg.per_record, rng) for a in caps]
    n_neg = sum(len(p) for p in picks)
    n_pos = round(cfg.positives * n_neg / (1 - cfg.positives))
    pos_of = [0] * len(caps)
    for j in (rng.sample(range(len(caps)), n_pos) if n_pos <= len(caps) else [rng.randrange(len(caps)) for _ in range(n_pos)]):
        pos_of[j] += 1
    stats.extra["captioned"] = len(caps)
    stats.flag("no_mismatch_found", sum(cfg.per_record - len(p) for p in picks))
    by_index = {c.index: (c, p, n) for c, p, n in zip(caps, picks, pos_of)}
    with RecordWriter(cfg.out) as w:
        for i, (rec, _) in enumerate(track(iter_valid([cfg.inp], stats), "make-negatives")):
            if not cfg.only_new:
                w.write(rec)
                stats.add("passed_through")
            if i not in by_index:
                continue
            a, neg, npos = by_index[i]
            for k, b in enumerate(neg):
                w.write(_sample(a, b, k, False, rec, rng))
            for k in range(npos):
                w.write(_sample(a, a, k, True, rec, rng))
        stats.add("negatives", n_neg)
        stats.add("positives", n_pos)
        stats.add("written", w.count)
    return stats
