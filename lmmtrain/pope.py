"""A POPE-style hallucination check: yes/no questions about matched and mismatched captions.

POPE asks "Is there a <object> in the image?" for present and absent objects and
scores the yes/no answers. We have captions rather than object lists, so the
questions come from the negatives machinery (`lmmdata make-negatives`) on held-out
records: half ask whether the image's own caption fits (answer yes), half whether
another image's caption fits (answer no; random or, with `hard`, lexically close
captions, like POPE's adversarial split). Reported like POPE: accuracy, precision,
recall, F1 (yes = positive class) and the yes-ratio.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmmdata.config import ConfigError
from lmmdata.images import resolve_path
from lmmdata.negatives import NegativesConfig, make_negatives
from lmmdata.records import BadRecord, images_of
from lmmdata.stats import Stats

ASK = {"en": " Answer yes or no.", "zh": "请回答是或否。"}
_NO_ZH = re.compile(r"^[^，。,.!?！？]*?(不|否|没|非|错)")
_YES_ZH = re.compile(r"^[^，。,.!?！？]*?(是|对|相符|准确|一致)")
_NO_EN = {"no", "not", "incorrect", "isn't", "doesn't", "don't", "wrong", "false", "nope"}
_YES_EN = {"yes", "correct", "matches", "match", "accurate", "right", "true", "yeah", "does"}


@dataclass
class PopeConfig:
    """Options of `lmmtrain eval-pope`."""

    checkpoint: str
    data: str  # held-out LLaVA records with one image and a caption-like first answer
    image_root: str | None = None  # default: the records file's directory
    out: str | None = None  # per-question results (JSONL)
    per_record: int = 1  # mismatched questions per record (as many matched ones are added)
    hard: bool = False  # lexically close mismatches (POPE's "adversarial" flavour)
    seed: int = 0
    limit: int | None = None  # at most this many questions
    max_new_tokens: int = 8
    device: str | None = None


def parse_yes_no(answer: str) -> str | None:
    """'yes', 'no', or None when the answer holds neither (POPE counts those as yes)."""
    text = answer.strip()
    if _NO_ZH.search(text[:12]):
        return "no"
    if _YES_ZH.search(text[:12]):
        return "yes"
    words = re.findall(r"[a-z']+", text.lower())[:8]
    if any(w in _NO_EN for w in words):
        return "no"
    if any(w in _YES_EN for w in words):
        return "yes"
    return None


@dataclass
class Scores:
    """Confusion counts with POPE's metrics (yes is the positive class)."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    unparsed: int = 0

    def add(self, truth: str, predicted: str) -> None:
        yes = predicted == "yes"
        if truth == "yes":
            self.tp, self.fn = self.tp + yes, self.fn + (not yes)
        else:
            self.fp, self.tn = self.fp + yes, self.tn + (not yes)

    def as_dict(self) -> dict[str, Any]:
        n = self.tp + self.fp + self.tn + self.fn
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"questions": n, "accuracy": (self.tp + self.tn) / n if n else 0.0, "precision": precision,
                "recall": recall, "f1": f1, "yes_ratio": (self.tp + self.fp) / n if n else 0.0,
                "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn, "unparsed": self.unparsed}


def build_questions(cfg: PopeConfig, work: Path) -> list[dict]:
    """Matched and mismatched caption questions (half each) from the negatives machinery."""
    out = work / "pope_questions.jsonl"
    neg = NegativesConfig(inp=cfg.data, out=str(out), per_record=cfg.per_record, positives=0.5, hard=cfg.hard,
                          seed=cfg.seed, only_new=True)
    make_negatives(neg, Stats("make-negatives", quiet=True))
    questions = []
    with open(out, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            q = rec["conversations"][0]["value"] + ASK.get(rec.get("lang", "en"), ASK["en"])
            questions.append({"id": rec["id"], "image": images_of(rec)[0], "question": q,
                              "truth": "no" if rec["negative"] else "yes", "lang": rec.get("lang", "en")})
    return questions[:cfg.limit] if cfg.limit else questions


def eval_pope(cfg: PopeConfig) -> dict[str, Any]:
    """Ask every question, score the answers; writes per-question results to `cfg.out` if given."""
    from lmmdata.progress import track

    from .chat import generate, load_chat_model

    if not Path(cfg.data).is_file():
        raise ConfigError(f"--data {cfg.data}: no such file")
    root = Path(cfg.image_root) if cfg.image_root else Path(cfg.data).resolve().parent
    chat = load_chat_model(cfg.checkpoint, device=cfg.device)
    scores = Scores()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        questions = build_questions(cfg, Path(tmp))
    if not questions:
        raise ConfigError(f"{cfg.data}: no questions could be built (needs captioned records of >= 2 images)")
    for q in track(questions, "eval-pope", total=len(questions), unit="questions"):
        try:
            image = resolve_path(root, q["image"])
        except BadRecord as e:
            raise ConfigError(f"question {q['id']}: {e}") from None
        answer = generate(chat, [{"role": "user", "content": q["question"]}], [image], max_new_tokens=cfg.max_new_tokens)
        parsed = parse_yes_no(answer)
        scores.unparsed += parsed is None
        predicted = parsed or "yes"  # POPE: anything that is not a "no" counts as yes
        scores.add(q["truth"], predicted)
        results.append({**q, "answer": answer, "parsed": parsed, "predicted": predicted})
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        tmp_out = Path(cfg.out).with_suffix(".tmp")
        tmp_out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results), encoding="utf-8")
        tmp_out.replace(cfg.out)
    return scores.as_dict()
