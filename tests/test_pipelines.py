"""Pipelines: the shard notebook runs headless, the LLaVA-zh recipe's step configs resolve, eval-pope mechanics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from lmmdata.config import resolve


def test_inspect_notebook_runs_headless(sample_shards, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("LMM_SHARDS", str(sample_shards))
    monkeypatch.setenv("LMM_FIGURE", str(tmp_path / "hist.png"))
    nb = nbformat.read(ROOT / "pipelines" / "inspect_shards.ipynb", as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    manifest = json.loads((sample_shards / "manifest.json").read_text())
    assert f"real-token fraction: {manifest['packing']['real_token_fraction']:.2%}" in text
    assert "row 0:" in text
    assert any("text/html" in o.get("data", {}) for o in outputs)  # a sample with highlighted spans
    assert any("image/png" in o.get("data", {}) for o in outputs)  # images and the histograms
    assert (tmp_path / "hist.png").stat().st_size > 1000


def test_llava_zh_recipe_dry_run_writes_valid_step_configs(tmp_path):
    from lmmdata.mix import MixConfig
    from lmmdata.negatives import NegativesConfig
    from lmmdata.pack import PackConfig
    from lmmdata.translate import TranslateConfig
    from lmmtrain.config import Stage1Config, Stage2Config

    cfg = yaml.safe_load((ROOT / "pipelines" / "llava_zh" / "config.yaml").read_text())
    cfg["work_dir"] = str(tmp_path / "work")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "llava_zh" / "run.py"), "--config",
                           str(tmp_path / "c.yaml"), "--dry-run"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    classes = {"translate_pretrain": TranslateConfig, "pack_pretrain": PackConfig, "stage1": Stage1Config,
               "translate_instruct": TranslateConfig, "mix_text": MixConfig, "make_negatives": NegativesConfig,
               "pack_instruct": PackConfig, "stage2": Stage2Config}
    resolved = {name: resolve(cls, tmp_path / "work" / "configs" / f"{name}.yaml") for name, cls in classes.items()}
    assert resolved["stage2"].lr == 2e-5 and resolved["stage2"].epochs == 1 and resolved["stage2"].init.endswith("stage1")
    assert resolved["stage1"].lr == 1e-3 and resolved["stage1"].vision == "openai/clip-vit-large-patch14-336"
    assert resolved["pack_instruct"].image_tokens == 576 and resolved["pack_instruct"].inputs == [resolved["make_negatives"].out]
    assert resolved["stage2"].data == [resolved["pack_instruct"].out]
    assert resolved["pack_pretrain"].template == "plain" and resolved["pack_instruct"].template == "auto"
    launch = f"{sys.executable} -m torch.distributed.run --nproc_per_node=8 -m lmmtrain.cli"
    assert proc.stdout.count(launch) == 2  # this interpreter, never `torchrun`/`python` from PATH
    assert proc.stdout.count(f"$ {sys.executable} -m lmmdata.cli") == 6


@pytest.mark.parametrize("answer,expected", [
    ("Yes, the description matches the image.", "yes"), ("No. That caption describes a different picture", "no"),
    ("That is not correct.", "no"), ("是的，这段描述准确地描述了这张图片。", "yes"), ("不相符。", "no"),
    ("这段描述不准确。", "no"), ("对，描述与图片一致", "yes"), ("A grey close-up of a moon", None),
])
def test_parse_yes_no(answer, expected):
    from lmmtrain.pope import parse_yes_no

    assert parse_yes_no(answer) == expected


def test_eval_pope_mechanics(stage1_run, sample_data, tmp_path):
    from lmmtrain.pope import PopeConfig, eval_pope

    out = tmp_path / "pope.jsonl"
    scores = eval_pope(PopeConfig(checkpoint=str(stage1_run[0]), data=str(sample_data), out=str(out), max_new_tokens=3))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == scores["questions"] > 0
    truths = [r["truth"] for r in rows]
    assert truths.count("yes") == truths.count("no")  # balanced, as POPE
    assert all(r["question"].startswith("<image>") and r["question"].endswith("Answer yes or no.") for r in rows)
    tp = sum(r["truth"] == "yes" and r["predicted"] == "yes" for r in rows)
    fp = sum(r["truth"] == "no" and r["predicted"] == "yes" for r in rows)
    tn = sum(r["truth"] == "no" and r["predicted"] == "no" for r in rows)
    assert (scores["tp"], scores["fp"], scores["tn"]) == (tp, fp, tn)
    assert scores["accuracy"] == pytest.approx((tp + tn) / len(rows))
    assert scores["yes_ratio"] == pytest.approx((tp + fp) / len(rows))
    assert scores["unparsed"] == sum(r["parsed"] is None for r in rows)
    assert all(r["predicted"] == (r["parsed"] or "yes") for r in rows)
    cli = subprocess.run([sys.executable, "-m", "lmmtrain.cli", "eval-pope", str(stage1_run[0]), "--data", str(sample_data),
                          "--limit", "4"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert json.loads(cli.stdout.strip().splitlines()[-1])["questions"] == 4
