"""gpt2_beam.py end to end: the paper's command on the E2E test mirror with a tiny NOLA model, the
decode step, launchers, and how checkpoints and flags are checked."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src import gpt2_beam
from src import gpt2_decode
from nola.decoding.beam import beam_search
from nola.config import BeamSettings
from nola.train.cli import config_from
from nola.gpt2.build import build_from_flags
from nola.gpt2.checkpoint import save_checkpoint
from nola.errors import UsageError
from tests.legacy_adapter import save_pt_adapter

NOLA = ["--nola_rank", "4", "--nola_c", "1.0", "--nola_qv", "--nola_num_basis", "64", "--qnola", "--qbits", "3"]
EVAL_LEN = 8


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_gpt2):
    """A base file of our own (so it can be moved) and a 3-bit NOLA adapter on it: the folder model.100/,
    the pickled model.100.pt of earlier versions, and a full checkpoint full/model.100.pt."""
    root = tmp_path_factory.mktemp("beam_cli")
    base = root / "base" / "pytorch_model.bin"
    base.parent.mkdir()
    shutil.copy(tiny_gpt2 / "pytorch_model.bin", base)
    card = str(tiny_gpt2 / "card.json")
    built = build_from_flags(("--model_card", card, "--init_checkpoint", str(base), *NOLA), torch.device("cpu"))
    torch.manual_seed(5)
    with torch.no_grad():
        for p in built.model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    save_checkpoint(built.model, root, built.base_path, built.base_sha256, 100)
    save_pt_adapter(built.model, root / "model.100.pt", built.base_path, built.base_sha256, step=100)
    save_checkpoint(built.model, root / "full", built.base_path, built.base_sha256, 100, full=True)
    return root, card


def beam_flags(data, work_dir, output, *extra):
    return ["--data", str(data), "--seq_len", "128", "--eval_len", str(EVAL_LEN), "--beam", "2",
            "--length_penalty", "0.8", "--no_repeat_ngram_size", "4", "--repetition_penalty", "1.0",
            "--eos_token_id", "628", "--work_dir", str(work_dir), "--output_file", output, *extra]


def read_predictions(path: Path) -> list[list[int]]:
    items = [json.loads(line) for line in path.read_text().splitlines()]
    assert [item["id"] for item in items] == list(range(len(items)))
    return [item["predict"] for item in items]


@pytest.fixture(scope="module")
def e2e_run(trained, e2e_data, repo):
    """The paper's decoding command (scaled down) as a plain-python process on the whole E2E test set."""
    root, card = trained
    cmd = [sys.executable, str(repo / "src" / "gpt2_beam.py"), "--batch_size", "32", "--model_card", card,
           "--init_checkpoint", str(root / "model.100"), "--platform", "local", *NOLA, "--threads", "1",
           *beam_flags(e2e_data / "test.jsonl", root / "run", "predict.100.b2p08r4.jsonl")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return root / "run" / "predict.100.b2p08r4.jsonl", done.stderr


def test_e2e_chain_decodes_each_context_once_and_writes_scorer_files(trained, e2e_run, e2e_data, mirror, repo, tmp_path):
    root, card = trained
    path, stderr = e2e_run
    preds = read_predictions(path)
    contexts = [json.loads(line)["context"] for line in (e2e_data / "test.jsonl").read_text().splitlines()]
    assert len(preds) == len(contexts) == 4693
    by_context = {}
    for ctx, pred in zip(contexts, preds):
        assert by_context.setdefault(tuple(ctx), pred) == pred  # duplicates share their prediction
        assert pred[-1] in (50256, 628) or len(pred) == EVAL_LEN
    assert len(by_context) == 630
    assert "630 distinct contexts" in stderr and "ex/s" in stderr  # progress bar in examples/s

    # same as beam-searching a few contexts alone with the adapter merged in this process
    model = build_from_flags(("--model_card", card, "--init_checkpoint", str(root / "model.100")),
                        torch.device("cpu")).model.eval()
    model.merge_adapters()
    settings = BeamSettings(beam=2, eval_len=EVAL_LEN, length_penalty=0.8, no_repeat_ngram_size=4, eos_ids=(50256, 628))
    firsts = list(by_context)[:4]
    assert [beam_search(model, [list(c)], settings)[0] for c in firsts] == [by_context[c] for c in firsts]

    gpt2_decode.main(["--vocab", str(mirror / "vocab"), "--sample_file", str(path),
                      "--input_file", str(e2e_data / "test_formatted.jsonl"),
                      "--output_ref_file", str(tmp_path / "e2e_ref.txt"), "--output_pred_file", str(tmp_path / "e2e_pred.txt")])
    assert (tmp_path / "e2e_ref.txt").read_bytes() == (mirror / "eval_golden" / "e2e_test_ref.txt").read_bytes()
    pred_lines = (tmp_path / "e2e_pred.txt").read_text().split("\n")
    assert len(pred_lines) == 631 and pred_lines[-1] == ""  # one line per context
    scored = subprocess.run([sys.executable, str(repo / "eval" / "e2e" / "measure_scores.py"),
                             str(tmp_path / "e2e_ref.txt"), str(tmp_path / "e2e_pred.txt"), "-p", "--json"],
                            capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["outputs"] == 630 and set(report["scores"]) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}


def test_two_ranks_under_torch_distributed_launch_match_one_process(trained, e2e_run, e2e_data, repo, tmp_path):
    root, card = trained
    subset = tmp_path / "head.jsonl"
    subset.write_text("".join((e2e_data / "test.jsonl").read_text().splitlines(keepends=True)[:150]))
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node", "2", "--master_port", str(port),
           str(repo / "src" / "gpt2_beam.py"), "--batch_size", "5", "--model_card", card,
           "--init_checkpoint", str(root / "model.100"), "--platform", "local", *NOLA, "--threads", "1",
           *beam_flags(subset, tmp_path, "predict.jsonl")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_predictions(tmp_path / "predict.jsonl") == read_predictions(e2e_run[0])[:150]


def test_checkpoint_formats_base_identity_and_flag_checks(trained, e2e_run, e2e_data, tmp_path):
    root, card = trained
    subset = tmp_path / "head.jsonl"
    subset.write_text("".join((e2e_data / "test.jsonl").read_text().splitlines(keepends=True)[:40]))
    expected = read_predictions(e2e_run[0])[:40]

    def decode(ckpt: Path, name: str, *extra: str) -> list[list[int]]:
        gpt2_beam.main(["--model_card", card, "--init_checkpoint", str(ckpt),
                        *beam_flags(subset, tmp_path, name), *extra])
        return read_predictions(tmp_path / name)

    assert decode(root / "full" / "model.100.pt", "full.jsonl", "--batch_size", "1") == expected
    assert decode(root / "model.100", "batch7.jsonl", "--batch_size", "7", *NOLA) == expected
    assert decode(root / "model.100.pt", "old.jsonl", "--batch_size", "7") == expected  # an earlier version's file
    for ckpt in (root / "model.100", root / "model.100.pt"):
        with pytest.raises(UsageError, match="--nola_rank 8 contradicts the checkpoint"):
            decode(ckpt, "x.jsonl", "--nola_rank", "8")
    with pytest.raises(UsageError, match="--seq_len 400: the model card .* has n_positions=256"):
        decode(root / "model.100", "x.jsonl", "--seq_len", "400", "--eval_len", "250")

    # microsoft/LoRA's own full state dict (no metadata, DDP prefix, untied head copy) with --lora_* flags
    lora = ["--lora_dim", "2", "--lora_alpha", "16"]
    built = build_from_flags(("--model_card", card, "--init_checkpoint", str(root / "base" / "pytorch_model.bin"),
                                   *lora), torch.device("cpu"))
    with torch.no_grad():
        for p in built.model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    state = {"module." + k: v for k, v in built.model.state_dict().items()}
    state["module.lm_head.decoder.weight"] = state["module.transformer.wte.weight"]
    torch.save({"model_state_dict": state}, tmp_path / "lora_original.pt")
    lora_folder, _ = save_checkpoint(built.model, tmp_path / "lora", built.base_path, built.base_sha256, 0)
    save_pt_adapter(built.model, tmp_path / "lora_adapter.pt", built.base_path, built.base_sha256)
    with_lora = decode(tmp_path / "lora_original.pt", "lora_a.jsonl", *lora)
    assert with_lora == decode(lora_folder, "lora_b.jsonl") == decode(tmp_path / "lora_adapter.pt", "lora_c.jsonl")
    base_only = decode(root / "base" / "pytorch_model.bin", "base.jsonl")
    assert with_lora != base_only and expected != base_only  # the adapters were applied

    moved = tmp_path / "moved" / "gpt2.bin"
    moved.parent.mkdir()
    base = root / "base" / "pytorch_model.bin"
    shutil.move(base, moved)
    try:
        other = tmp_path / "other.bin"
        state = torch.load(moved, weights_only=True)
        state["ln_f.bias"] = state["ln_f.bias"] + 1.0
        torch.save(state, other)
        for ckpt in (root / "model.100", root / "model.100.pt"):
            with pytest.raises(UsageError, match="--base_checkpoint"):
                decode(ckpt, "x.jsonl")
            assert decode(ckpt, "moved.jsonl", "--base_checkpoint", str(moved)) == expected
            with pytest.raises(UsageError, match="SHA-256 must match"):
                decode(ckpt, "x.jsonl", "--base_checkpoint", str(other))
    finally:
        shutil.move(moved, base)
    assert not (tmp_path / "x.jsonl").exists()


def test_flags_eos_ids_append_to_50256_and_defaults_follow_the_original():
    parser = gpt2_beam.build_parser()
    args = parser.parse_args(["--data", "x.jsonl", "--eos_token_id", "628"])
    assert config_from(BeamSettings, args).eos_ids == (50256, 628)
    plain = parser.parse_args(["--data", "x.jsonl"])
    assert plain.eos_ids == [50256]  # the default list was not mutated by the first parse
    assert (plain.beam, plain.length_penalty, plain.no_repeat_ngram_size, plain.repetition_penalty,
            plain.batch_size, plain.seq_len, plain.eval_len, plain.min_length) == (1, 1.0, 4, 1.0, 10, 512, 256, 0)
    with pytest.raises(UsageError, match="--beam 0: must be a number >= 1"):
        gpt2_beam.main(["--data", "x.jsonl", "--beam", "0"])
