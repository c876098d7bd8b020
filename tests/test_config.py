"""Configs are the single source: every flag comes from a field, with the field's default and check,
and the metadata block is the same in adapter files, resume.pt and exports."""
from __future__ import annotations

import json
from dataclasses import MISSING, fields

import pytest
import torch

from nola.gpt2.build import build_model, resolve_adapter
from nola.gpt2.checkpoint import metadata, read_checkpoint, save_checkpoint
from nola.train.cli import config_from
from nola.config import (AdapterRequest, BeamSettings, DecodeConfig, LaunchConfig, LoRAConfig, ModelSource,
                         NOLAConfig, OptimConfig, TrainConfig, flag_of, identity_fields)
from nola.errors import UsageError
from nola.train.resume import load_resume
from src import export_hf, gpt2_beam, gpt2_ft

REQUIRED = {TrainConfig: {"train_data": "t.jsonl", "valid_data": "v.jsonl"}, DecodeConfig: {"data": "x.jsonl"}}
SCRIPTS = {gpt2_ft: (LaunchConfig, ModelSource, TrainConfig, OptimConfig),
           gpt2_beam: (LaunchConfig, ModelSource, DecodeConfig, BeamSettings)}
ARGV = {gpt2_ft: ["--train_data", "t.jsonl", "--valid_data", "v.jsonl", "--max_epoch", "5"],
        gpt2_beam: ["--data", "x.jsonl"]}


@pytest.mark.parametrize("script", list(SCRIPTS), ids=lambda m: m.__name__)
def test_every_field_is_a_flag_whose_default_is_the_fields(script):
    parser = script.build_parser()
    options = {s for action in parser._actions for s in action.option_strings}
    args = parser.parse_args(ARGV[script])
    for cls in SCRIPTS[script]:
        built = config_from(cls, args)
        for f in fields(cls):
            if not f.metadata.get("cli", True):
                continue
            assert f"--{flag_of(f)}" in options, (cls.__name__, f.name)
            if f.default is not MISSING and f.name not in ("max_epoch",):
                assert getattr(built, f.name) == f.default, (cls.__name__, f.name)


def test_seq_len_and_work_dir_have_one_definition_for_training_and_decoding():
    train = {f.name: f for f in fields(TrainConfig)}
    decode = {f.name: f for f in fields(DecodeConfig)}
    for name in ("seq_len", "work_dir"):
        assert train[name] is decode[name] or train[name].metadata is decode[name].metadata
    assert DecodeConfig(data="x").output_path.endswith("gpt2_model/beam_prediction.jsonl")


@pytest.mark.parametrize("cls, values, needle", [
    (OptimConfig, {"lr": float("nan"), "max_epoch": 1}, "--lr nan"),
    (OptimConfig, {"weight_decay": -0.1, "max_epoch": 1}, "--weight_decay -0.1"),
    (OptimConfig, {"lr": 0.1}, "--max_epoch"),
    (TrainConfig, {"train_batch_size": 0, **REQUIRED[TrainConfig]}, "--train_batch_size 0"),
    (TrainConfig, {"label_smooth": 1.0, **REQUIRED[TrainConfig]}, "--label_smooth 1.0"),
    (BeamSettings, {"beam": 0}, "--beam 0"),
    (BeamSettings, {"length_penalty": float("nan")}, "--length_penalty nan"),
    (BeamSettings, {"eos_ids": (-1,)}, "--eos_token_id"),
    (NOLAConfig, {"qbits": 9}, "--qbits 9"),
    (NOLAConfig, {"num_basis": 0}, "--nola_num_basis 0"),
    (LoRAConfig, {"dropout": 1.0}, "--lora_dropout 1.0"),
    (LaunchConfig, {"threads": 0}, "--threads 0"),
])
def test_each_check_lives_on_its_field_and_names_the_flag(cls, values, needle):
    with pytest.raises(ValueError, match=needle.replace("-", r"\-")):
        cls(**values)


def test_identity_fields_are_those_that_change_the_numbers():
    assert identity_fields(NOLAConfig) == ("rank", "num_basis", "c", "qv", "mlp", "seed", "seed_per_layer", "qbits")
    assert identity_fields(LoRAConfig) == ("dim", "alpha")


def test_requested_adapter_checked_against_the_record():
    recorded = NOLAConfig(rank=4, num_basis=10, qv=True)
    same = resolve_adapter(AdapterRequest(nola={"rank": 4, "basis_dtype": "bfloat16"}), "onthefly", recorded)
    assert (same.rank, same.basis_dtype, same.mode) == (4, "bfloat16", "onthefly")
    with pytest.raises(UsageError, match="--nola_rank 8 contradicts the checkpoint"):
        resolve_adapter(AdapterRequest(nola={"rank": 8}), "materialised", recorded)
    with pytest.raises(UsageError, match="cannot be combined"):
        resolve_adapter(AdapterRequest(nola={"rank": 8, "qv": True}, lora={"dim": 4}), "materialised")
    assert resolve_adapter(AdapterRequest(nola={"qv": True}), "materialised").rank == NOLAConfig().rank


def test_one_metadata_block_in_adapter_folder_resume_file_and_export(tiny_gpt2, tmp_path):
    source = ModelSource(model_card=str(tiny_gpt2 / "card.json"), init_checkpoint=str(tiny_gpt2 / "pytorch_model.bin"))
    built = build_model(source, torch.device("cpu"), AdapterRequest(nola={"rank": 4, "qv": True, "num_basis": 20}))
    block = metadata(built.model, built.base_path, built.base_sha256)
    assert set(block) == {"version", "adapter", "config", "model_config", "base"}
    folder, _ = save_checkpoint(built.model, tmp_path, built.base_path, built.base_sha256, 3)
    adapter_folder = read_checkpoint(folder)
    assert {k: adapter_folder[k] for k in block} == block
    export_hf.main(["--model_card", source.model_card, "--init_checkpoint", str(folder),
                    "--out", str(tmp_path / "hf")])
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())["nola_export"]
    assert {k: exported[k] for k in block} == json.loads(json.dumps(block))


def test_resume_file_written_before_the_shared_block_still_loads(tmp_path):
    old = {"format": "nola-resume", "version": 1, "adapter": "nola", "adapter_config": NOLAConfig(qv=True).to_dict(),
           "base": {"path": "b.bin", "sha256": "0" * 64}, "model_config": {}, "run": {},
           "step": 0, "trainable": {}, "optimizer": {}, "scaler": {}, "rng": []}
    torch.save(old, tmp_path / "resume.pt")
    state = load_resume(tmp_path)
    assert state["config"] == NOLAConfig(qv=True).to_dict() and "adapter_config" not in state
