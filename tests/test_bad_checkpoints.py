"""Damaged, truncated and foreign checkpoints of every kind: one `error:` line naming the file, exit 2,
nothing written; content checksums (`nola.integrity`) catch a flipped byte; files written before
checksums still load, with a note, to the same predictions. Adapters come as the folder ``model.<step>/``
and as the pickled ``model.<step>.pt`` of earlier versions (written by ``tests/legacy_adapter.py``).

The command-line cases are rows of ``CASES``: (id, argv, expected substring of the one `error:`
line, paths that must not exist afterwards); ``{d}`` is the fixture folder, ``{id}`` the case id.
They run concurrently (4 processes at a time); the library-level checks run in-process."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import multiprocessing
import multiprocessing.connection
import random
import runpy
import shutil
import struct
import sys
from pathlib import Path

import pytest
import torch

import nola
from nola.gpt2.checkpoint import metadata, read_checkpoint, save_checkpoint
from nola.gpt2.build import build_from_flags
from nola.config import NOLAConfig, OptimConfig
from nola.errors import UsageError
from nola.hf_adapter import CONFIG_FILE, WEIGHTS_FILE
from nola.integrity import CONTENT_KEY, content_digest, seal
from nola.train.optim import make_optimizer
from nola.train.resume import rng_state, save_resume
from tests.legacy_adapter import save_pt_adapter

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
NOLA = ["--nola_rank", "4", "--nola_c", "1.0", "--nola_qv", "--nola_num_basis", "16", "--qnola", "--qbits", "3"]
CARD = ["--model_card", "{d}/card.json"]
LOCAL = ["--platform", "local", "--threads", "1"]
BEAM = ["src/gpt2_beam.py", *CARD, *LOCAL, "--data", "{d}/lines.jsonl", "--seq_len", "32", "--eval_len", "4",
        "--beam", "2", "--work_dir", "{d}/out_{id}", "--output_file", "p.jsonl"]
FT = ["src/gpt2_ft.py", *CARD, *LOCAL, "--train_data", "{d}/lines.jsonl", "--valid_data", "{d}/lines.jsonl",
      "--seq_len", "32", "--train_batch_size", "2", "--max_step", "4", "--work_dir", "{d}/out_{id}"]
RESUME = ["src/gpt2_ft.py", *CARD, *LOCAL, "--train_data", "{d}/lines.jsonl", "--valid_data", "{d}/lines.jsonl",
          "--seq_len", "32", "--train_batch_size", "2", "--max_step", "4"]
EXPORT = ["src/export_hf.py", *CARD, "--out", "{d}/out_{id}"]
OUT = "{d}/out_{id}"
UNREADABLE = "is unreadable or truncated"

CASES = [
    ("beam-safetensors-truncated", [*BEAM, "--init_checkpoint", "{d}/cut.safetensors"], f"{{d}}/cut.safetensors {UNREADABLE}", [OUT]),
    ("beam-bin-zip-truncated", [*BEAM, "--init_checkpoint", "{d}/cut.bin"], f"{{d}}/cut.bin {UNREADABLE}", [OUT]),
    ("beam-adapter-truncated", [*BEAM, "--init_checkpoint", "{d}/model.cut.pt"], f"{{d}}/model.cut.pt {UNREADABLE}", [OUT]),
    ("beam-random-bytes", [*BEAM, "--init_checkpoint", "{d}/random.bin"], f"{{d}}/random.bin {UNREADABLE}", [OUT]),
    ("beam-empty-file", [*BEAM, "--init_checkpoint", "{d}/empty.pt"], "{d}/empty.pt is empty", [OUT]),
    ("beam-directory", [*BEAM, "--init_checkpoint", "{d}/lines"], "{d}/lines is a directory", [OUT]),
    ("beam-adapter-flipped-byte", [*BEAM, "--init_checkpoint", "{d}/model.flip.pt"], "{d}/model.flip.pt is damaged", [OUT]),
    ("beam-adapter-missing-key", [*BEAM, "--init_checkpoint", "{d}/model.nocard.pt"], "{d}/model.nocard.pt lacks 'model_config'", [OUT]),
    ("beam-adapter-wrong-type", [*BEAM, "--init_checkpoint", "{d}/model.listed.pt"], "{d}/model.listed.pt: 'tensors' holds a list", [OUT]),
    ("beam-base-truncated", [*BEAM, "--init_checkpoint", "{d}/model.100.pt", "--base_checkpoint", "{d}/cut.bin"], "not the base file {d}/cut.bin", [OUT]),
    ("beam-folder-flipped-byte", [*BEAM, "--init_checkpoint", "{d}/model.flip"], f"{{d}}/model.flip/{WEIGHTS_FILE}: SHA-256 differs", [OUT]),
    ("beam-folder-no-config", [*BEAM, "--init_checkpoint", "{d}/model.noconfig"], f"{{d}}/model.noconfig/{CONFIG_FILE} not found", [OUT]),
    ("beam-folder-other-base", [*BEAM, "--init_checkpoint", "{d}/model.200", "--base_checkpoint", "{d}/base.safetensors"],
     "{d}/model.200: saved for the base file {d}/base.bin (sha256 ", [OUT]),
    ("beam-folder-of-a-hub-model", [*BEAM, "--init_checkpoint", "{d}/hub_adapter"], "{d}/hub_adapter: an adapter for a GPT2LMHeadModel identified by its config, not for the GPT-2 fork", [OUT]),
    ("beam-pt-name-of-a-folder-other-base", [*BEAM, "--init_checkpoint", "{d}/model.200.pt", "--base_checkpoint", "{d}/base.safetensors"],
     "{d}/model.200.pt: saved for the base file {d}/base.bin (sha256 ", [OUT]),
    ("export-folder-random-base", [*EXPORT, "--init_checkpoint", "{d}/model.0"], "{d}/model.0: this adapter was trained on a randomly initialised GPT-2", [OUT]),
    ("ft-init-safetensors-truncated", [*FT, "--init_checkpoint", "{d}/cut.safetensors"], f"{{d}}/cut.safetensors {UNREADABLE}", [OUT]),
    ("ft-init-random-bytes", [*FT, "--init_checkpoint", "{d}/random.bin"], f"{{d}}/random.bin {UNREADABLE}", [OUT]),
    ("ft-init-adapter-flipped-byte", [*FT, "--init_checkpoint", "{d}/model.flip.pt"], "{d}/model.flip.pt is damaged", [OUT]),
    ("ft-resume-truncated", [*RESUME, "--resume", "{d}/rs_cut"], f"{{d}}/rs_cut/resume.pt {UNREADABLE}", ["{d}/rs_cut/log.jsonl"]),
    ("ft-resume-empty", [*RESUME, "--resume", "{d}/rs_empty"], "{d}/rs_empty/resume.pt is empty", ["{d}/rs_empty/log.jsonl"]),
    ("ft-resume-random-bytes", [*RESUME, "--resume", "{d}/rs_random/resume.pt"], f"{{d}}/rs_random/resume.pt {UNREADABLE}", ["{d}/rs_random/log.jsonl"]),
    ("ft-resume-flipped-byte", [*RESUME, "--resume", "{d}/rs_flip"], "{d}/rs_flip/resume.pt is damaged", ["{d}/rs_flip/log.jsonl"]),
    ("ft-resume-missing-key", [*RESUME, "--resume", "{d}/rs_noopt"], "{d}/rs_noopt/resume.pt lacks 'optimizer'", ["{d}/rs_noopt/log.jsonl"]),
    ("ft-resume-wrong-type", [*RESUME, "--resume", "{d}/rs_listed"], "{d}/rs_listed/resume.pt: 'trainable' holds a list", ["{d}/rs_listed/log.jsonl"]),
    ("ft-resume-no-position", [*RESUME, "--resume", "{d}/rs_noepoch"], "{d}/rs_noepoch/resume.pt lacks 'epoch'", ["{d}/rs_noepoch/log.jsonl"]),
    ("ft-resume-adapter-file", [*RESUME, "--resume", "{d}/model.100.pt"], "{d}/model.100.pt: not a resume file", ["{d}/log.jsonl"]),
    # A resume or adapter file meets a base: the recorded one (SHA-256 checked) or none at all.
    ("ft-resume-base-moved", [*RESUME, "--resume", "{d}/rs_moved"], "the interrupted run's base checkpoint '{d}/gone.bin' is not there; pass --base_checkpoint", ["{d}/rs_moved/log.jsonl"]),
    ("ft-resume-moved-base-given", [*RESUME, "--resume", "{d}/rs_moved", "--base_checkpoint", "{d}/base.safetensors"], "not the base file {d}/base.safetensors", ["{d}/rs_moved/log.jsonl"]),
    ("ft-resume-other-base", [*RESUME, "--random_seed", "110", "--resume", "{d}/rs", "--init_checkpoint", "{d}/base.safetensors"], "not the base file {d}/base.safetensors", ["{d}/rs/log.jsonl"]),
    ("ft-resume-random-base-given-one", [*RESUME, "--resume", "{d}/rs_nobase", "--init_checkpoint", "{d}/base.bin"], "trained on a randomly initialised GPT-2 (no --init_checkpoint), so it must continue on one: drop --init_checkpoint", ["{d}/rs_nobase/log.jsonl"]),
    ("beam-adapter-random-base", [*BEAM, "--init_checkpoint", "{d}/model.nobase.pt"], "{d}/model.nobase.pt: this adapter was trained on a randomly initialised GPT-2", [OUT]),
    ("export-adapter-random-base", [*EXPORT, "--init_checkpoint", "{d}/model.nobase.pt"], "{d}/model.nobase.pt: this adapter was trained on a randomly initialised GPT-2", [OUT]),
    ("export-safetensors-truncated", [*EXPORT, "--init_checkpoint", "{d}/cut.safetensors"], f"{{d}}/cut.safetensors {UNREADABLE}", [OUT]),
    ("export-adapter-truncated", [*EXPORT, "--init_checkpoint", "{d}/model.cut.pt"], f"{{d}}/model.cut.pt {UNREADABLE}", [OUT]),
    ("export-adapter-flipped-byte", [*EXPORT, "--init_checkpoint", "{d}/model.flip.pt"], "{d}/model.flip.pt is damaged", [OUT]),
    ("export-empty-file", [*EXPORT, "--init_checkpoint", "{d}/empty.pt"], "{d}/empty.pt is empty", [OUT]),
]
# Not errors: the same adapter as a folder, as an old sealed file and as written before checksums decode
# to the same predictions.
GOOD = [("beam-sealed", [*BEAM, "--init_checkpoint", "{d}/model.100.pt"]),
        ("beam-old-format", [*BEAM, "--init_checkpoint", "{d}/model.old.pt"]),
        ("beam-folder", [*BEAM, "--init_checkpoint", "{d}/model.200"])]


def flip_inside(data: bytes, tensor: torch.Tensor) -> bytes:
    """``data`` with one byte changed in the middle of ``tensor``'s raw bytes (found in the file)."""
    raw = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    assert data.count(raw) == 1, "the tensor's bytes must occur once in the file"
    at = data.index(raw) + len(raw) // 2
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


def legacy_save(obj: dict, path: Path) -> None:
    """As gpt2_ft.py writes adapter files (torch's plain container), without re-sealing."""
    torch.save(obj, path, _use_new_zipfile_serialization=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_gpt2) -> Path:
    """A tiny base (zip .bin, .safetensors), a trained 3-bit NOLA adapter on it (folder and old file) and a
    resume.pt, each also truncated, flipped, emptied or with a key missing or of the wrong type; a
    transformers model's adapter folder; 6 encoded lines."""
    d = tmp_path_factory.mktemp("bad_ckpt")
    shutil.copy(tiny_gpt2 / "card.json", d / "card.json")
    shutil.copy(tiny_gpt2 / "pytorch_model.bin", d / "base.bin")
    shutil.copy(tiny_gpt2 / "model.safetensors", d / "base.safetensors")
    rnd = random.Random(3)
    lines = [{"context": [rnd.randrange(50257) for _ in range(6)], "completion": [rnd.randrange(50257) for _ in range(5)]}
             for _ in range(6)]
    (d / "lines.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (d / "lines").mkdir()
    built = build_from_flags(("--model_card", str(d / "card.json"), "--init_checkpoint", str(d / "base.bin"), *NOLA), CPU)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in built.model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.5)
    save_pt_adapter(built.model, d / "model.100.pt", built.base_path, built.base_sha256, step=100)
    save_pt_adapter(built.model, d / "model.nobase.pt", None, None, step=100)
    folder, _ = save_checkpoint(built.model, d, built.base_path, built.base_sha256, 200)
    save_checkpoint(built.model, d, None, None, 0)  # model.0/: trained on a random GPT-2
    for name in ("flip", "noconfig"):
        shutil.copytree(folder, d / f"model.{name}")
    (d / "model.noconfig" / CONFIG_FILE).unlink()
    from safetensors.torch import load_file

    weights = (folder / WEIGHTS_FILE).read_bytes()
    (d / "model.flip" / WEIGHTS_FILE).write_bytes(flip_inside(weights, load_file(folder / WEIGHTS_FILE)["scale"]))
    nola.save_adapter(_hf_adapted()[0], d / "hub_adapter")
    adapter = torch.load(d / "model.100.pt", weights_only=True)
    old = {k: v for k, v in adapter.items() if k != CONTENT_KEY}
    legacy_save(old, d / "model.old.pt")
    legacy_save(seal({k: v for k, v in old.items() if k != "model_config"}), d / "model.nocard.pt")
    legacy_save({**old, "tensors": []}, d / "model.listed.pt")
    data = (d / "model.100.pt").read_bytes()
    (d / "model.flip.pt").write_bytes(flip_inside(data, adapter["quantised"]["scale"]))
    (d / "model.cut.pt").write_bytes(data[: len(data) * 2 // 3])
    for name in ("bin", "safetensors"):
        whole = (tiny_gpt2 / f"{'pytorch_model' if name == 'bin' else 'model'}.{name}").read_bytes()
        (d / f"cut.{name}").write_bytes(whole[: len(whole) // 2])
    (d / "random.bin").write_bytes(random.Random(1).randbytes(4096))
    (d / "empty.pt").write_bytes(b"")
    optimizer = make_optimizer(built.model, OptimConfig(max_step=4))
    position = {"step": 100, "epoch": 1, "batch": 3, "best_ppl": None}
    run = {"train_batch_size": 2, "grad_acc": 1, "random_seed": 110, "seq_len": 32, "obj": "clm", "world_size": 1}
    save_resume(d / "rs", metadata(built.model, built.base_path, built.base_sha256), position, built.model,
                optimizer, torch.amp.GradScaler("cpu", enabled=False), [rng_state(CPU)], run)
    for name, base in {"moved": {"path": str(d / "gone.bin"), "sha256": built.base_sha256},
                       "nobase": {"path": None, "sha256": None}}.items():
        save_resume(d / f"rs_{name}", {**metadata(built.model, built.base_path, built.base_sha256), "base": base},
                    position, built.model, optimizer, torch.amp.GradScaler("cpu", enabled=False), [rng_state(CPU)],
                    {**run, "random_seed": 10})  # the flags of RESUME (its default seed)
    resume = torch.load(d / "rs" / "resume.pt", weights_only=True)
    raw = (d / "rs" / "resume.pt").read_bytes()
    unsealed = {k: v for k, v in resume.items() if k != CONTENT_KEY}
    variants = {"cut": raw[: len(raw) // 2], "empty": b"", "random": random.Random(2).randbytes(2048),
                "flip": flip_inside(raw, next(iter(resume["trainable"].values())))}
    for name, blob in variants.items():
        (d / f"rs_{name}").mkdir()
        (d / f"rs_{name}" / "resume.pt").write_bytes(blob)
    for name, state in {"noopt": {k: v for k, v in unsealed.items() if k != "optimizer"},
                        "listed": {**unsealed, "trainable": []},
                        "noepoch": seal({k: v for k, v in unsealed.items() if k != "epoch"})}.items():
        (d / f"rs_{name}").mkdir()
        torch.save(state, d / f"rs_{name}" / "resume.pt")
    return d


def _fill(value: str, d: Path, case_id: str) -> str:
    return value.replace("{d}", str(d)).replace("{id}", case_id)


def _cli(script: str, argv: list[str], log: str) -> None:
    """In a child process: run ``script`` as ``python script argv...`` would, stdout/stderr to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = [script, *argv]
    sys.path[0] = str(Path(script).parent)
    runpy.run_path(script, run_name="__main__")


@pytest.fixture(scope="module")
def results(files) -> dict[str, tuple[int, str]]:
    """(exit status, stdout + stderr) of every command-line case, 4 at a time. Each case is its own
    process, forked from a server that imported torch and nola once: starting 27 interpreters
    would cost more than the cases themselves."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "nola.gpt2.build", "nola.decoding.beam", "nola.gpt2.train", "nola.gpt2.export"])
    pending = [(case_id, argv) for case_id, argv, *_ in CASES] + GOOD
    running, out = {}, {}
    while pending or running:
        while pending and len(running) < 4:
            case_id, argv = pending.pop(0)
            script, *rest = (_fill(a, files, case_id) for a in argv)
            log = files / f"{case_id}.log"
            proc = context.Process(target=_cli, args=(str(REPO / script), rest, str(log)))
            proc.start()
            running[proc.sentinel] = (case_id, proc, log)
        for sentinel in multiprocessing.connection.wait(list(running), timeout=300):
            case_id, proc, log = running.pop(sentinel)
            proc.join()
            out[case_id] = (proc.exitcode, log.read_text())
        assert running or out, "no case finished within 300 s"
    return out


@pytest.mark.parametrize("case_id, argv, expected, absent", CASES, ids=[c[0] for c in CASES])
def test_bad_checkpoint_is_one_error_line(files, results, case_id, argv, expected, absent):
    status, stderr = results[case_id]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert len(errors) == 1, stderr
    assert _fill(expected, files, case_id) in errors[0]
    for path in absent:
        assert not Path(_fill(path, files, case_id)).exists(), path


def test_adapter_written_before_checksums_loads_with_a_note_to_the_same_predictions(files, results):
    (sealed, sealed_err), (old, old_err), (folder, folder_err) = (results[case] for case, _ in GOOD)
    assert sealed == 0 and old == 0 and folder == 0, sealed_err + old_err + folder_err
    note = f"note: {files}/model.old.pt was written before nola recorded content checksums"
    assert note in old_err and "note:" not in sealed_err and "note:" not in folder_err
    predictions = [(files / f"out_{case}" / "p.jsonl").read_text() for case, _ in GOOD]
    assert predictions[0] == predictions[1] == predictions[2] and len(predictions[0].splitlines()) == 6


def _encode(tag: bytes, data: bytes) -> bytes:
    return tag + struct.pack("<Q", len(data)) + data


def test_content_digest_is_the_documented_encoding_and_container_independent(tmp_path):
    values = torch.tensor([[1.5, -2.0]])
    expected = hashlib.sha256(
        _encode(b"d", b"2") + _encode(b"s", b"a") + _encode(b"l", b"2") + _encode(b"i", b"3") + _encode(b"n", b"")
        + _encode(b"s", b"w") + _encode(b"T", b"torch.float32(1, 2)") + _encode(b"", struct.pack("<2f", 1.5, -2.0))
    ).hexdigest()
    obj = {"w": values, "a": (3, None)}
    assert content_digest(obj) == expected
    assert content_digest({"a": [3, None], "w": values.t().contiguous().t()}) == expected  # order, tuple, strides
    torch.save(obj, tmp_path / "zip.pt")
    torch.save(obj, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert (tmp_path / "zip.pt").read_bytes() != (tmp_path / "legacy.pt").read_bytes()
    for name in ("zip.pt", "legacy.pt"):
        assert content_digest(torch.load(tmp_path / name, weights_only=True)) == expected
    for changed in ({"w": values.double(), "a": (3, None)}, {"w": values.view(2), "a": (3, None)},
                    {"w": values + 1e-7, "a": (3, None)}, {"w": values, "a": (3.0, None)}, {"w": values, "a": ("3", None)}):
        assert content_digest(changed) != expected


def test_truncated_or_flipped_files_of_every_kind_raise_only_usage_errors(files):
    """Cut each kind of file at 12 points and flip 12 of its bytes: the loader raises the one-line
    error, or returns a sealed file's content unchanged (a byte the container ignores); base files
    carry no checksum (an adapter records its base's file SHA-256 instead)."""
    from nola.train.resume import load_resume

    sources = {"bin": files / "base.bin", "safetensors": files / "base.safetensors", "adapter": files / "model.100.pt", "resume": files / "rs" / "resume.pt"}
    for kind, path in sources.items():
        load = load_resume if kind == "resume" else read_checkpoint
        data, rnd = path.read_bytes(), random.Random(kind)
        want = content_digest(load(path) if kind != "resume" else torch.load(path, weights_only=True))
        bad = path.parent / f"fuzz_{path.name}"
        for at in sorted(rnd.sample(range(len(data)), 12)):
            for blob in (data[:at], data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]):
                bad.write_bytes(blob)
                try:
                    got = load(bad)
                except UsageError:
                    continue
                if kind == "resume":
                    got = torch.load(bad, weights_only=True)
                assert kind in ("bin", "safetensors") or content_digest(got) == want, f"{kind}: byte {at} changed the content unnoticed"
        bad.unlink()


def _hf_adapted():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2)).eval()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    nola.inject(model, NOLAConfig(rank=2, num_basis=8, qv=True), ["attn_q", "attn_v"])
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_()
    return model, base


def _bare(base):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2)).eval()
    model.load_state_dict(base)
    return model


def test_adapter_folder_flipped_byte_or_changed_seed_is_an_error_and_an_old_folder_loads_with_a_note(tmp_path, caplog):
    model, base = _hf_adapted()
    folder = nola.save_adapter(model, tmp_path / "a")
    ids = torch.arange(10).view(1, 10)
    want = model(ids).logits
    weights, header = (folder / WEIGHTS_FILE).read_bytes(), json.loads((folder / CONFIG_FILE).read_text())
    from safetensors.torch import load_file

    (folder / WEIGHTS_FILE).write_bytes(flip_inside(weights, load_file(folder / WEIGHTS_FILE)["nola.attn_q.alpha"]))
    with pytest.raises(UsageError, match=f"{folder / WEIGHTS_FILE}: SHA-256 differs"):
        nola.load_adapter(_bare(base), folder)
    (folder / WEIGHTS_FILE).write_bytes(weights)
    seeds = header["roles"]["attn_q"]["seeds"]["A"]
    (folder / CONFIG_FILE).write_text(json.dumps({**header, "config": {**header["config"], "seed": header["config"]["seed"] + 1},
                                                  "roles": {**header["roles"], "attn_q": {**header["roles"]["attn_q"],
                                                            "seeds": {**header["roles"]["attn_q"]["seeds"], "A": [seeds[0] + 1]}}}}))
    with pytest.raises(UsageError, match=f"{folder} is damaged"):
        nola.load_adapter(_bare(base), folder)
    (folder / CONFIG_FILE).write_text(json.dumps({k: v for k, v in header.items() if k != CONTENT_KEY}))
    logger = logging.getLogger("nola")  # nola's loggers do not propagate to the root, where caplog listens
    logger.addHandler(caplog.handler)
    try:
        loaded = nola.load_adapter(_bare(base), folder)
    finally:
        logger.removeHandler(caplog.handler)
    assert "written before nola recorded content checksums" in caplog.text
    assert torch.equal(loaded(ids).logits, want)
