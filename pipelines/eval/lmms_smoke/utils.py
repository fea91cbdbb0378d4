"""doc_to_* functions of the local lmm_smoke task."""


def doc_to_visual(doc):
    return [doc["image"].convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    answer = results[0].strip()
    return {"answered": float(bool(answer)), "exact": float(answer == doc["answer"])}
