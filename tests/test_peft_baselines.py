"""PEFT's VeRA, VB-LoRA, FourierFT and TinyLoRA trained by llama_ft.py's loop (the baselines of the real-weights
table), on a tiny random LlamaForCausalLM: the loss falls, the folder is PEFT's own (``PeftModel.from_pretrained``
reads it back to the trained weights), the logged validation loss equals the reloaded model's own ``labels=``
loss, a stopped run resumes to the uninterrupted run's adapter, and llama_beam.py decodes the merged model
exactly as PEFT's unmerged model decodes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nola.causal import d2t
from src.llama_ft import main as train

# method -> options giving a few hundred trainable numbers on q_proj, v_proj of the tiny model.
METHODS = {"vera": "r=16", "vblora": "r=2,num_vectors=8,vector_length=16", "fourierft": "n_frequency=32,scaling=50",
           "tinylora": "r=4,u=8"}


@pytest.fixture
def setup(tiny_d2t) -> dict:
    return tiny_d2t


def flags(setup: dict, out: Path, method: str, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(setup["model"]), "--dataset", str(setup["train"]), "--eval_dataset",
            str(setup["valid"]), "--bits", "32", "--device", "cpu", "--threads", "1", "--output_dir", str(out),
            "--logging_steps", "1", "--max_grad_norm", "0", "--target_modules", "q_proj,v_proj",
            "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--max_steps", "6",
            "--save_steps", "3", "--lr", "0.2", "--peft_method", method, "--peft_options", METHODS[method], *extra]


def reloaded(setup: dict, out: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(setup["model"]), str(out)).eval()


def own_valid_loss(model, setup: dict) -> float:
    from transformers import AutoTokenizer

    from nola.causal.alpaca import IGNORE_INDEX
    from nola.causal.causal_data import encode_d2t
    from nola.train.formats import read_formatted

    tok = AutoTokenizer.from_pretrained(setup["model"])
    total = count = 0.0
    with torch.no_grad():
        for record in read_formatted(setup["valid"]):
            ids, labels = encode_d2t(record, tok, 1024, 256)
            n = sum(label != IGNORE_INDEX for label in labels[1:])
            total += model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item() * n
            count += n
    return total / count


@pytest.mark.parametrize("method", list(METHODS))
def test_a_peft_method_trains_on_the_loop_and_writes_peft_s_own_folder(setup, tmp_path, method):
    out = tmp_path / method
    train(flags(setup, out, method))
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "split" not in r]
    assert len(losses) == 6 and losses[-1] < 0.95 * losses[0], losses
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"].lower().replace("_", "") == method and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    model = reloaded(setup, out)
    trained = {n: p for n, p in model.named_parameters() if n.endswith(".default") or ".default." in n}
    assert trained and any(p.abs().sum() > 0 for p in trained.values())
    valid = [r for r in rows if r.get("split") == "valid"][-1]["loss"]
    assert valid == pytest.approx(own_valid_loss(model, setup), rel=1e-5)


def test_a_stopped_peft_run_resumes_to_the_uninterrupted_adapter(setup, tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    train(flags(setup, whole, "vera"))
    train(flags(setup, part, "vera", "--stop_at_step", "3"))
    train(flags(setup, part, "vera", "--resume", str(part)))
    a, b = load_file(whole / "adapter_model.safetensors"), load_file(part / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "log.jsonl").read_text() == (part / "log.jsonl").read_text()


def test_llama_beam_decodes_the_merged_peft_model_as_peft_s_unmerged_model_does(setup, tmp_path):
    from transformers import AutoTokenizer

    from nola.decoding.beam import decode_contexts
    from nola.config import BeamSettings
    from nola.train.formats import read_formatted
    from src.llama_beam import main as beam

    out = tmp_path / "fourierft"
    train(flags(setup, out, "fourierft"))
    ref, pred = tmp_path / "ref.txt", tmp_path / "pred.txt"
    beam(["--model_name_or_path", str(setup["model"]), "--bits", "32", "--device", "cpu", "--threads", "1",
          "--adapter", str(out), "--data", str(setup["valid"]), "--beam", "3", "--eval_len", "8",
          "--output_ref_file", str(ref), "--output_pred_file", str(pred)])
    tok = AutoTokenizer.from_pretrained(setup["model"])
    contexts = list(dict.fromkeys(r["context"] for r in read_formatted(setup["valid"])))
    settings = BeamSettings(beam=3, eval_len=8, eos_ids=(tok.eos_token_id,))
    ids = decode_contexts(reloaded(setup, out).base_model.model, [d2t.prompt_ids(tok, c) for c in contexts],
                          settings, 1, lambda _n: None)
    texts = [tok.decode([t for t in p if t != tok.eos_token_id]).strip() for p in ids]
    assert pred.read_text().splitlines() == texts


@pytest.mark.parametrize("extra,message", [
    (["--peft_method", "lokr"], "--peft_method lokr: unknown; choose one of vera, vblora, fourierft, tinylora"),
    (["--peft_method", "vera", "--peft_options", "rank=4"], "VeraConfig has no option 'rank'"),
    (["--peft_method", "vera", "--peft_options", "r"], "'r' is not key=value"),
    (["--peft_options", "r=4"], "--peft_options needs --peft_method"),
    (["--peft_method", "vera", "--nola_rank", "4"], "NOLA (--nola_*, --qnola) and PEFT's vera (--peft_method) flags cannot be combined: choose one adapter"),
    (["--peft_method", "vera", "--target_modules", "nope"], "--target_modules"),
], ids=["method", "option", "syntax", "no-method", "two-adapters", "target"])
def test_bad_peft_flags_stop_with_one_error_line(setup, tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    base = ["--model_name_or_path", str(setup["model"]), "--dataset", str(setup["train"]), "--bits", "32",
            "--device", "cpu", "--output_dir", str(out), "--max_steps", "2", "--target_modules", "q_proj,v_proj"]
    from nola.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train(base + extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not (out / "adapter_model.safetensors").exists()
