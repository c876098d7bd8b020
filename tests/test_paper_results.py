"""results/: published.json is well-formed and sourced; rows are recorded from a real adapter file
and rendered next to the published numbers by scripts/make_table.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nola.gpt2.checkpoint import save_checkpoint
from nola.errors import UsageError
from nola.config import NOLAConfig
from nola.gpt2.model import GPT2Config, GPT2LMModel
from scripts.paper.results import METRICS, load_published, load_rows, parse_scores, render_table
from tests.legacy_adapter import save_pt_adapter

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "results" / "published.json"


def test_published_json_is_well_formed_and_sourced():
    data = load_published(PUBLISHED)  # raises on a missing source, unknown metric or duplicate id
    assert data["not_found"], "what could not be found is listed"
    entries = [row["published"] for row in data["rows"] if "published" in row]
    assert entries
    for entry in entries:
        source = entry["source"]
        assert source["url"].startswith("https://") and source["table"] and source["paper"]
        assert entry["scores"] and all(isinstance(v, (int, float)) for v in entry["scores"].values())
    by_id = {row["id"]: row for row in data["rows"]}
    # Spot checks against the LoRA paper (arXiv 2106.09685): Table 3 and Table 14.
    assert by_id["e2e_gpt2m_lora_r4"]["published"]["scores"] == {
        "BLEU": 70.4, "NIST": 8.85, "METEOR": 46.8, "ROUGE_L": 71.8, "CIDEr": 2.53}
    assert by_id["webnlg_gpt2m_lora_r4"]["published"]["scores"]["BLEU_A"] == 55.3


def test_published_json_rejects_an_unsourced_entry(tmp_path):
    data = json.loads(PUBLISHED.read_text())
    row = next(r for r in data["rows"] if "published" in r)
    del row["published"]["source"]["table"]
    bad = tmp_path / "published.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(UsageError, match=r"rows\[\d+\]: a published entry needs source.url and source.table"):
        load_published(bad)


def test_parse_scores_forms():
    assert parse_scores('{"BLEU": 0.68, "NIST": 8.7, "ROUGE_L": 0.71, "CIDEr": 2.4}', "x") == {
        "BLEU": 0.68, "NIST": 8.7, "ROUGE_L": 0.71, "CIDEr": 2.4}
    assert parse_scores('{"scores": {"bleu": 30.42, "ter": 0.6}, "what": "dev"}', "x") == {"BLEU": 30.42, "TER": 0.6}
    assert parse_scores("SCORES:\nBLEU: 0.6845\nCIDEr: 2.4511\nTER = 0.39\nnoise 1\n", "x") == {
        "BLEU": 0.6845, "CIDEr": 2.4511, "TER": 0.39}
    with pytest.raises(UsageError, match="no scores found"):
        parse_scores("nothing here", "out.txt")


def _row(name: str, dataset: str, scores: dict, params: int | None = None, size: int | None = None) -> str:
    return json.dumps({"name": name, "model": "gpt2.md", "dataset": dataset, "params": params,
                       "adapter_bytes": size, "scores": scores}) + "\n"


def _line(table: str, row_id: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {row_id} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_render_table_puts_ours_beside_published(tmp_path):
    (tmp_path / "e2e.jsonl").write_text(
        _row("e2e_gpt2m_lora_r4", "e2e", {"BLEU": 0.6, "NIST": 8.0, "METEOR": 0.4, "ROUGE_L": 0.7, "CIDEr": 2.0})
        + _row("e2e_gpt2m_lora_r4", "e2e", {"BLEU": 0.68452, "NIST": 8.7013, "METEOR": 0.46011,
                                            "ROUGE_L": 0.71049, "CIDEr": 2.4551}, 393216, 1574443)
        + _row("e2e_gpt2m_nola_qv_96k", "e2e", {"BLEU": 0.7012, "NIST": 8.81, "METEOR": 0.467,
                                                "ROUGE_L": 0.718, "CIDEr": 2.52}, 96000, 395000)
        + _row("my_extra_run", "e2e", {"BLEU": 0.5}))
    (tmp_path / "webnlg.jsonl").write_text(_row("webnlg_gpt2m_lora_r4", "webnlg", {
        "BLEU_U": 45.91, "BLEU_S": 62.0, "BLEU_A": 54.7, "METEOR_U": 0.37, "METEOR_S": 0.44, "METEOR_A": 0.405,
        "TER_U": 0.47, "TER_S": 0.33, "TER_A": 0.394}))
    table = render_table(load_published(PUBLISHED), load_rows(tmp_path))

    # the second (latest) run of a row wins; E2E fractions are shown x100 like the paper
    assert _line(table, "e2e_gpt2m_lora_r4") == [
        "e2e_gpt2m_lora_r4", "gpt2.md", "LoRA r=4 (q,v)", "0.393M / 0.35M", "1574443",
        "68.5 / 70.4", "8.70 / 8.85", "46.0 / 46.8", "71.0 / 71.8", "2.46 / 2.53"]
    assert _line(table, "e2e_gpt2m_nola_qv_96k")[3:6] == ["0.096M / —", "395000", "70.1 / —"]
    # not run yet: dashes on our side, the published number as printed (Table 18 has 4 decimals)
    assert _line(table, "e2e_gpt2m_lora_r1")[3:] == ["— / —", "—", "— / 68.72", "— / 8.7215", "— / 45.65",
                                                     "— / 70.52", "— / 2.4329"]
    assert _line(table, "e2e_gpt2l_qnola4")[5:] == ["— / —"] * 5
    assert _line(table, "my_extra_run")[2] == "(not a paper row)"
    web = _line(table, "webnlg_gpt2m_lora_r4")
    assert web[5:8] == ["45.9 / 46.7", "62.0 / 62.1", "54.7 / 55.3"]  # BLEU U, S, A
    assert web[-1] == "0.39 / 0.39"  # TER-A
    header = next(line for line in table.splitlines() if line.startswith("| row |") and "BLEU-U" in line)
    assert header.count("|") == 6 + len(METRICS["webnlg"])
    assert "- `e2e_gpt2m_lora_r4`: Table 3, row 'GPT-2 M (LoRA)', https://arxiv.org/abs/2106.09685" in table


def test_make_table_cli_writes_what_it_prints(tmp_path):
    (tmp_path / "dart.jsonl").write_text(_row("dart_gpt2m_nola", "dart", {"BLEU": 46.23, "METEOR": 0.384, "TER": 0.468}))
    out = tmp_path / "table.md"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "make_table.py"), "--results", str(tmp_path),
                             "--published", str(PUBLISHED), "--out", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == result.stdout
    assert _line(result.stdout, "dart_gpt2m_nola")[5:] == ["46.2 / —", "0.38 / —", "0.47 / —"]
    assert _line(result.stdout, "dart_gpt2m_lora_r4")[5:] == ["— / 47.1", "— / 0.39", "— / 0.46"]


def test_make_table_cli_bad_row_is_one_line_error(tmp_path):
    (tmp_path / "e2e.jsonl").write_text('{"name": "x", "scores": {}}\n{not json\n')
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "make_table.py"), "--results", str(tmp_path),
                             "--published", str(PUBLISHED)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {tmp_path / 'e2e.jsonl'}:2: not JSON") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("layout", ["folder", "old file"])
def test_record_row_from_a_quantised_adapter(tmp_path, layout):
    """record_row.py counts the coefficients of a real (3-bit packed) adapter, the folder or an earlier
    version's file, and appends one row."""
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=1000)
    model = GPT2LMModel(cfg, nola=NOLAConfig(rank=4, num_basis=10, qv=True, qbits=3))
    if layout == "folder":
        ckpt, size = save_checkpoint(model, tmp_path / "work", None, None, 120)
    else:
        ckpt = tmp_path / "work" / "model.120.pt"
        ckpt.parent.mkdir()
        size = save_pt_adapter(model, ckpt, step=120)
    scores = tmp_path / "work" / "scores.json"
    scores.write_text('{"BLEU": 0.61, "NIST": 7.9, "METEOR": 0.43, "ROUGE_L": 0.65, "CIDEr": 2.2}')
    commands = tmp_path / "work" / "commands.txt"
    commands.write_text("python -m torch.distributed.launch gpt2_ft.py --qnola\npython gpt2_beam.py\n")
    results = tmp_path / "results"
    args = [sys.executable, str(REPO / "scripts" / "paper" / "record_row.py"), "--name", "e2e_gpt2m_qnola3",
            "--model", "gpt2.md", "--dataset", "e2e", "--checkpoint", str(ckpt), "--scores", str(scores),
            "--commands", str(commands), "--nproc", "2", "--results_dir", str(results)]
    for _ in range(2):
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    lines = (results / "e2e.jsonl").read_text().splitlines()
    assert len(lines) == 2
    row = json.loads(lines[-1])
    assert row["params"] == 2 * 2 * 2 * 10  # layers x (q, v) x (alpha, beta) x k
    assert row["adapter_bytes"] == size == sum(p.stat().st_size for p in ([ckpt] if ckpt.is_file() else ckpt.iterdir()))
    assert row["scores"]["BLEU"] == 0.61 and row["nproc"] == 2 and row["dataset"] == "e2e"
    assert row["commands"] == ["python -m torch.distributed.launch gpt2_ft.py --qnola", "python gpt2_beam.py"]
    assert row["git_commit"] and row["date"].endswith("+00:00")
    table = render_table(load_published(PUBLISHED), load_rows(results))
    assert _line(table, "e2e_gpt2m_qnola3")[3:6] == ["0.000M / —", str(size), "61.0 / —"]


def test_record_row_webnlg_needs_three_parts(tmp_path):
    scores = tmp_path / "s.txt"
    scores.write_text("BLEU: 50.0\n")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "paper" / "record_row.py"), "--name", "w",
                             "--model", "gpt2.md", "--dataset", "webnlg", "--checkpoint", str(scores),
                             "--scores", f"A={scores}", "--commands", str(scores), "--nproc", "1",
                             "--results_dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --scores: webnlg takes U=FILE S=FILE A=FILE, got ['A={scores}']"
