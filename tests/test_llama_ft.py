"""llama_ft.py end to end on a tiny random LlamaForCausalLM and an Alpaca-format file made here: the
official Alpaca prompt, loss on the response only, NOLA / qNOLA / LoRA training, resume, 2 processes
vs 1 under torch.distributed.launch, and the one-line errors."""
from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nola.causal.alpaca import IGNORE_INDEX, PROMPT_INPUT, PROMPT_NO_INPUT, alpaca_prompt, collate, encode
from nola.errors import run_cli
from nola.hf_adapter import WEIGHTS_FILE
from scripts.tiny_llama import save_tiny_llama, words_of
from src.llama_ft import main

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "src" / "llama_ft.py")
COLOURS = ["red", "blue", "green", "black"]
RECORDS = [{"instruction": f"Name the colour number {i}", "input": "of the sky" if i % 2 else "",
            "output": f"The colour is {COLOURS[i % 4]} today"} for i in range(8)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A tiny LLaMA (weights std 0.2, so adapters move the logits) knowing every word of the data."""
    root = tmp_path_factory.mktemp("llama")
    data = root / "alpaca.json"
    data.write_text(json.dumps(RECORDS))
    texts = [PROMPT_INPUT, PROMPT_NO_INPUT] + [" ".join(r.values()) for r in RECORDS]
    model = save_tiny_llama(root / "model", words_of(texts), initializer_range=0.2)
    return {"model": model, "data": data}


def common(setup: dict, out: Path) -> list[str]:
    return ["--model_name_or_path", str(setup["model"]), "--dataset", str(setup["data"]), "--bits", "32",
            "--device", "cpu", "--threads", "1", "--output_dir", str(out), "--logging_steps", "1",
            "--max_grad_norm", "0"]


NOLA = ["--nola_rank", "4", "--nola_num_basis", "32", "--nola_c", "4"]


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / WEIGHTS_FILE)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_alpaca_prompt_is_the_official_string():
    """UCDvision/NOLA llama/qlora.py ALPACA_PROMPT_DICT, typed out here: note the space after 'Response:'."""
    with_input = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
    assert alpaca_prompt(with_input) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response: ")
    for record in ({"instruction": "Say hi.", "input": "", "output": "hi"}, {"instruction": "Say hi.", "output": "hi"}):
        assert alpaca_prompt(record) == (
            "Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nSay hi.\n\n### Response: ")


def test_the_loss_is_on_the_response_and_eos_only(setup):
    """Source = BOS + prompt, target = output + EOS, tokenised apart; labels -100 on the source,
    truncation per part; padding is masked out of attention and labels."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(setup["model"])
    record = RECORDS[1]
    ids, labels = encode(record, tok, 1024, 256)
    source = tok("<s>" + alpaca_prompt(record), add_special_tokens=False)["input_ids"]
    target = tok(record["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert source[0] == tok.bos_token_id and ids == source + target
    assert labels == [IGNORE_INDEX] * len(source) + target
    short_ids, short_labels = encode(record, tok, 5, 2)
    assert short_ids == source[:5] + target[:2] and short_labels == [IGNORE_INDEX] * 5 + target[:2]
    batch = collate([encode(RECORDS[0], tok, 1024, 256), (ids, labels)], pad_id=tok.pad_token_id)
    first = len(encode(RECORDS[0], tok, 1024, 256)[0])
    assert batch["attention_mask"][0].sum() == first and (batch["labels"][0, first:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, first:] == tok.pad_token_id).all()


def test_nola_with_gradient_checkpointing_lowers_the_loss(setup, tmp_path):
    """8 examples, one update of all 8 per step: the same data every step, so the losses compare."""
    out = tmp_path / "nola"
    main(common(setup, out) + NOLA + ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
                                      "--max_steps", "8", "--lr", "0.05", "--gradient_checkpointing"])
    seen = losses(out)
    assert len(seen) == 8 and seen[-1] < 0.85 * seen[0], seen
    header = json.loads((out / "adapter_config.json").read_text())
    assert header["adapter"] == "nola" and header["target_modules"] == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_qnola_3_bit_trains_and_its_file_is_the_packed_size(setup, tmp_path):
    """7 roles x 2 layers x (32 + 32) coefficients = 896 at 3 bits: ceil(896 * 3 / 8) = 336 code bytes,
    plus one float32 scale per row (7 roles x 2 factors x 2 layers = 28)."""
    out = tmp_path / "qnola"
    main(common(setup, out) + NOLA + ["--qnola", "--qbits", "3", "--per_device_train_batch_size", "8",
                                      "--gradient_accumulation_steps", "1", "--max_steps", "8", "--lr", "0.05"])
    seen = losses(out)
    assert seen[-1] < 0.85 * seen[0], seen
    tensors = adapter(out)
    assert set(tensors) == {"codes", "scale"}
    assert tensors["codes"].dtype == torch.uint8 and tensors["codes"].numel() == math.ceil(896 * 3 / 8)
    assert tensors["scale"].dtype == torch.float32 and tensors["scale"].numel() == 28
    raw = (out / WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert len(raw) - 8 - header_len == 336 + 28 * 4


def test_resume_is_exact(setup, tmp_path):
    """LoRA with dropout (RNG), linear warm-up and decay, 2 updates an epoch: 6 updates in one go vs
    stopped after 3 and resumed (output folder taken from --resume) give the same tensors."""
    args = ["--lora_dim", "2", "--lora_alpha", "8", "--lora_dropout", "0.1", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "2", "--max_steps", "6", "--lr", "0.01", "--lr_scheduler_type", "linear",
            "--warmup_steps", "2", "--save_steps", "100", "--seed", "3"]
    main(common(setup, tmp_path / "whole") + args)
    main(common(setup, tmp_path / "split") + args + ["--stop_at_step", "3"])
    stopped = torch.load(tmp_path / "split" / "resume.pt", weights_only=True)
    assert stopped["step"] == 3
    resumed = [a for a in common(setup, tmp_path / "split") if a != "--output_dir" and a != str(tmp_path / "split")]
    main(resumed + args + ["--resume", str(tmp_path / "split")])
    whole, split = adapter(tmp_path / "whole"), adapter(tmp_path / "split")
    moved = max(t.abs().max().item() for name, t in whole.items() if "lora_B" in name)
    assert moved > 1e-3 and max_diff(whole, split) == 0.0
    assert losses(tmp_path / "split") == losses(tmp_path / "whole")


def test_resume_refuses_another_base_model(setup, tmp_path, capsys):
    """resume.pt names the base the adapter was trained on; resuming on another folder, even a copy of
    the same architecture, is one error line (a config hash cannot tell weights apart)."""
    import shutil

    other = Path(shutil.copytree(setup["model"], tmp_path / "other"))
    args = NOLA + ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--max_steps", "2",
                   "--lr", "0.05"]
    main(common(setup, tmp_path / "run") + args + ["--stop_at_step", "1"])
    capsys.readouterr()
    argv = common(setup, tmp_path / "run") + args + ["--resume", str(tmp_path / "run"), "--model_name_or_path", str(other)]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("error: --resume") and "model_name_or_path" in err[-1], err
    assert torch.load(tmp_path / "run" / "resume.pt", weights_only=True)["step"] == 1


def test_resume_refuses_a_base_replaced_in_the_same_folder(setup, tmp_path, capsys):
    """The same --model_name_or_path now holding another configuration (a model re-fetched into the
    folder) is caught by the configuration hash resume.pt records: one error line, resume.pt kept."""
    import shutil

    folder = Path(shutil.copytree(setup["model"], tmp_path / "model"))
    args = NOLA + ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--max_steps", "2",
                   "--lr", "0.05", "--model_name_or_path", str(folder)]
    main(common(setup, tmp_path / "run") + args + ["--stop_at_step", "1"])
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(common(setup, tmp_path / "run") + args + ["--resume", str(tmp_path / "run")]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("error: --resume") and "trained on another base" in err[-1], err
    assert torch.load(tmp_path / "run" / "resume.pt", weights_only=True)["step"] == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_equal_one_with_twice_the_batch(setup, tmp_path):
    """Rank r takes the r-th half of each update's block of the permutation one process walks, and the
    loss is divided by the update's token count over both ranks: same gradient, same parameters."""
    args = NOLA + ["--gradient_accumulation_steps", "1", "--max_steps", "4", "--lr", "0.05", "--seed", "5",
                   "--weight_decay", "0.01"]
    cmd = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2", f"--master_port={free_port()}",
           SCRIPT] + common(setup, tmp_path / "two") + args + ["--per_device_train_batch_size", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    main(common(setup, tmp_path / "one") + args + ["--per_device_train_batch_size", "4"])
    two, one = adapter(tmp_path / "two"), adapter(tmp_path / "one")
    moved = max((t - 1 / 32).abs().max().item() for t in one.values())
    # Different padding shapes round differently; Adam turns that into ~1e-4 of the parameters' motion.
    assert moved > 0.02 and max_diff(two, one) < 3e-4 * moved
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=1e-4)


@pytest.mark.parametrize("flags,message", [
    (["--bits", "4", "--nola_rank", "4"], "error: --bits 4 needs a CUDA GPU"),
    (["--bits", "32"], "error: no adapter: give --nola_rank"),
    (["--bits", "32", "--nola_rank", "4", "--target_modules", "c_attn"], "error: --target_modules c_attn: target"),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(setup, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    argv = [a for a in common(setup, out) if a not in ("--bits", "32")] + flags
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith(message), err
    assert not out.exists()


def test_the_merged_model_loads_in_transformers_and_computes_the_adapted_logits(setup, tmp_path):
    from transformers import AutoModelForCausalLM

    from nola.hf_adapter import load_adapter
    from src.llama_merge import main as merge

    out = tmp_path / "nola"
    main(common(setup, out) + NOLA + ["--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1",
                                      "--max_steps", "3", "--lr", "0.05"])
    merge(["--model_name_or_path", str(setup["model"]), "--bits", "32", "--adapter", str(out),
           "--output_dir", str(tmp_path / "merged")])
    ids = torch.arange(4, 20)[None]
    base = AutoModelForCausalLM.from_pretrained(setup["model"]).eval()
    plain = base(input_ids=ids).logits
    adapted = load_adapter(base, out)(input_ids=ids).logits
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not any("nola" in k for k in merged.state_dict())
    assert (adapted - plain).abs().max() > 1e-2
    assert torch.allclose(merged(input_ids=ids).logits, adapted, atol=1e-5)


def test_gradient_checkpointing_recomputes_the_nola_layers_with_the_same_gradients(setup):
    from transformers import AutoModelForCausalLM

    from nola.config import NOLAConfig
    from nola.adapters import inject
    from nola.causal.llama_train import enable_checkpointing

    model = AutoModelForCausalLM.from_pretrained(setup["model"])
    inject(model, NOLAConfig(rank=4, num_basis=32, c=4.0), ["q_proj", "v_proj", "down_proj"])
    model.train()
    ids = torch.arange(4, 24)[None]

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain = grads()
    enable_checkpointing(model)
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else \
        "is_gradient_checkpointing"
    assert getattr(model, name)
    again = grads()
    assert max(t.abs().max().item() for t in plain.values()) > 0
    assert all(torch.allclose(plain[n], again[n], atol=1e-6) for n in plain)
