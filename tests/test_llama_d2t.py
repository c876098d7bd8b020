"""llama_ft.py on data-to-text: E2E records from the mirror as create_datasets.sh formats them, on a tiny
random LlamaForCausalLM whose tokenizer knows their words. The examples are nola.causal.d2t's prompt and
target; NOLA, qNOLA and LoRA train on different LLaMA projections; the logged validation loss equals
the model's own labels= loss over the evaluation file, recomputed here from the saved adapter."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nola.causal import d2t
from nola.causal.alpaca import IGNORE_INDEX
from nola.causal.causal_data import dataset_kind, encode_d2t
from src.llama_ft import main


@pytest.fixture
def setup(tiny_d2t) -> dict:
    return tiny_d2t


def test_a_record_is_the_d2t_prompt_then_its_target_with_the_loss_on_the_target(setup):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(setup["model"])
    record = setup["records"][0]
    prompt, target = d2t.prompt_ids(tok, record["context"]), d2t.target_ids(tok, record["completion"])
    assert target[-1] == tok.eos_token_id and tok.unk_token_id not in prompt + target
    ids, labels = encode_d2t(record, tok, 1024, 256)
    assert ids == prompt + target and labels == [IGNORE_INDEX] * len(prompt) + target
    assert encode_d2t(record, tok, 3, 2) == (prompt[:3] + target[:2], [IGNORE_INDEX] * 3 + target[:2])
    assert dataset_kind(str(setup["train"])) == "d2t" and dataset_kind("alpaca") == "alpaca"
    assert dataset_kind("data/e2e/valid.jsonl") == "alpaca"  # the GPT-2-encoded file is not read as text


def own_loss(model_dir: Path, adapter_dir: Path, path: Path) -> float:
    """Token-mean of the model's own labels= loss over the file, one record at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nola.train.formats import read_formatted
    from nola.hf_adapter import load_adapter

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load_adapter(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir).eval()
    total = count = 0.0
    with torch.no_grad():
        for record in read_formatted(path):
            ids, labels = encode_d2t(record, tok, 1024, 256)
            n = sum(label != IGNORE_INDEX for label in labels[1:])
            total += model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item() * n
            count += n
    return total / count


@pytest.mark.parametrize("adapter,targets", [
    (["--nola_rank", "4", "--nola_num_basis", "32", "--nola_c", "4"], "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"),
    (["--nola_rank", "4", "--nola_num_basis", "32", "--nola_c", "4", "--qnola", "--qbits", "3"], "gate_proj,up_proj,down_proj"),
    (["--lora_dim", "2", "--lora_alpha", "8"], "k_proj,o_proj"),
], ids=["nola-all-seven", "qnola-mlp", "lora-k-o"])
def test_training_lowers_the_loss_and_logs_the_validation_loss(setup, tmp_path, adapter, targets):
    out = tmp_path / "run"
    main(["--model_name_or_path", str(setup["model"]), "--dataset", str(setup["train"]), "--eval_dataset",
          str(setup["valid"]), "--eval_steps", "3", "--per_device_eval_batch_size", "3", "--bits", "32",
          "--device", "cpu", "--threads", "1", "--output_dir", str(out), "--logging_steps", "1", "--max_grad_norm",
          "0", "--target_modules", targets, "--per_device_train_batch_size", "4", "--gradient_accumulation_steps",
          "2", "--max_steps", "6", "--lr", "0.1", *adapter])
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in rows if "split" not in r]
    valid = [r for r in rows if r.get("split") == "valid"]
    assert len(train) == 6 and train[-1] < 0.85 * train[0], train
    assert [r["step"] for r in valid] == [3, 6] and valid[1]["loss"] < valid[0]["loss"], valid
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"] == targets.split(",")
    assert valid[1]["loss"] == pytest.approx(own_loss(setup["model"], out, setup["valid"]), rel=1e-5)
