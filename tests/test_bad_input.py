"""Bad input on every command line: exit status 2, no traceback, exactly one ``error:`` line naming
the flag or file, and nothing left behind.

One row of :data:`CASES` is one case: an id, a builder of the command line (it may first write the
case's own bad files into the case folder), the texts the error line must hold and the paths (in the
case folder) that must not exist afterwards. Every case runs in its own folder (also its working
directory); besides the named paths, no file may appear there. Other checks append rows here.

Each case is a subprocess; they are all launched together by one module fixture with a small pool
(one worker per core) and then asserted one by one, so that a failure still reports its case id
and the file stays fast (most cases fail before the scripts import torch).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
LATIN1 = "caf\xe9".encode("latin-1")  # é in Latin-1: not UTF-8
UNWRITABLE = "/sys/nola_bad_input"  # sysfs: no file can be created there, not even by root


@dataclass(frozen=True)
class Inputs:
    """Valid shared inputs (read-only for the cases), built once per module."""

    root: Path
    mirror: Path

    @property
    def vocab(self) -> Path:
        return self.mirror / "vocab"

    @property
    def card(self) -> str:
        return str(self.root / "card.json")

    @property
    def encoded(self) -> str:
        return str(self.root / "data.jsonl")

    @property
    def formatted(self) -> str:
        return str(self.root / "data_formatted.jsonl")

    @property
    def samples(self) -> str:
        return str(self.root / "samples.jsonl")


Argv = Callable[[Inputs, Path], list[str]]


@dataclass(frozen=True)
class Case:
    id: str
    argv: Argv  # (inputs, case folder) -> command line
    expect: tuple[str, ...]  # texts of the one error line
    absent: tuple[str, ...] = ()  # paths relative to the case folder
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables


def py(script: str, *args: object) -> list[str]:
    return [sys.executable, str(REPO / script), *map(str, args)]


def sh(script: str, *args: object) -> list[str]:
    return ["bash", str(REPO / script), *map(str, args)]


def put(folder: Path, name: str, content: str | bytes) -> str:
    """Write a case's own input file; return its path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def card_file(folder: Path, content: object) -> str:
    return put(folder, "card.json", content if isinstance(content, bytes) else json.dumps(content))


# --- command lines with valid defaults ------------------------------------------------------------
def ft(i: Inputs, d: Path, *extra: object, card: str | None = None) -> list[str]:
    return py("src/gpt2_ft.py", "--train_data", i.encoded, "--valid_data", i.encoded, "--model_card",
              card or i.card, "--max_step", 1, "--seq_len", 64, "--work_dir", d / "run", *extra)


def llama_beam(i: Inputs, d: Path, *extra: object) -> list[str]:
    """src/llama_beam.py on the shared formatted file, writing into the case folder, with ``extra`` last."""
    return py("src/llama_beam.py", "--model_name_or_path", d / "m", "--data", i.formatted,
              "--output_ref_file", d / "ref.txt", "--output_pred_file", d / "pred.txt", *extra)


def beam(i: Inputs, d: Path, *extra: object, data: str | None = None) -> list[str]:
    return py("src/gpt2_beam.py", "--data", data or i.encoded, "--model_card", i.card, "--seq_len", 64,
              "--eval_len", 16, "--work_dir", d / "out", "--init_checkpoint", d / "model.pt", *extra)


def decode(i: Inputs, d: Path, *extra: object, samples: str | None = None, formatted: str | None = None,
           ref: object = None, pred: object = None) -> list[str]:
    return py("src/gpt2_decode.py", "--vocab", i.vocab, "--sample_file", samples or i.samples, "--input_file",
              formatted or i.formatted, "--output_ref_file", ref or d / "ref.txt", "--output_pred_file",
              pred or d / "pred.txt", *extra)


def encode(i: Inputs, d: Path, *, src: str | None = None, out: object = None, vocab: object = None) -> list[str]:
    return py("src/gpt2_encode.py", "--vocab", vocab or i.vocab, "--input", src or i.formatted,
              "--output", out or d / "out.jsonl", "--add_bos", "--add_eos")


def export(i: Inputs, d: Path, *extra: object, card: str | None = None, out: object = None) -> list[str]:
    return py("src/export_hf.py", "--model_card", card or i.card, "--init_checkpoint", d / "model.pt",
              "--out", out or d / "hf", *extra)


def llama_ft(d: Path, *extra: object) -> list[str]:
    """llama_ft.py with a model folder that passes the checks made before the data is read."""
    put(d, "m/config.json", "{}")
    return py("src/llama_ft.py", "--model_name_or_path", d / "m", "--output_dir", d / "o", "--nola_rank", 8, "--bits",
              32, *extra)


def e2e_score(ref: str, pred: str) -> list[str]:
    return py("eval/e2e/measure_scores.py", ref, pred, "-p")


def webnlg_score(prefix: str, hyp: str, *extra: object) -> list[str]:
    return py("eval/eval.py", "-R", prefix, "-H", hyp, "-m", "bleu", *extra)


WEBNLG_RAW = {"entries": [{"1": {"category": "Airport", "modifiedtripleset": [
    {"subject": "A", "property": "p", "object": "B"}], "lexicalisations": [{"comment": "good", "lex": "LEX"}]}}]}
DART_RAW = [{"tripleset": [["A", "p", "B"]], "annotations": [{"text": "LEX"}]}]


def raw_json(value: object) -> bytes:
    """``value`` as JSON whose placeholder LEX holds a Latin-1 byte."""
    return json.dumps(value).encode().replace(b"LEX", LATIN1)


def ok_sample(ids: str) -> str:
    return '{"id": 0, "predict": [464, 3290]}\n' + '{"id": 1, "predict": ' + ids + '}\n'


def vit(d: Path, *extra: object, data: Path | None = None) -> list[str]:
    """src/vit_ft.py on the toy ViT; the case's own image folder unless ``data`` is given."""
    from scripts.vit.toy_images import draw_dataset

    return py("src/vit_ft.py", "--train_data_path", data or draw_dataset(d / "data", classes=2, train=3, val=1),
              "--vit", "toy", "--augment", "none", "--device", "cpu", "--num_workers", 0, "--outdir", d / "o", *extra)


def vit_damaged(d: Path, split: str, name: str, content: bytes) -> list[str]:
    from scripts.vit.toy_images import draw_dataset

    data = draw_dataset(d / "data", classes=2, train=3, val=1)
    put(data / split / "class1", name, content)
    return vit(d, data=data)


FT_RUN = ("run",)
BEAM_OUT = ("out",)
LLAMA_BEAM_OUT = ("ref.txt", "pred.txt")
DECODE_OUT = ("ref.txt", "pred.txt")

CASES: list[Case] = [
    # --- gpt2_ft.py: numbers (finite, in range) --------------------------------------------------
    Case("ft-lr-nan", lambda i, d: ft(i, d, "--lr", "nan"), ("--lr nan", "finite"), FT_RUN),
    Case("ft-lr-inf", lambda i, d: ft(i, d, "--lr", "inf"), ("--lr inf", "finite"), FT_RUN),
    Case("ft-lr-negative", lambda i, d: ft(i, d, "--lr", "-0.1"), ("--lr -0.1",), FT_RUN),
    Case("ft-weight-decay-negative", lambda i, d: ft(i, d, "--weight_decay", "-0.01"), ("--weight_decay",), FT_RUN),
    Case("ft-threads-zero", lambda i, d: ft(i, d, "--threads", 0), ("--threads 0",), FT_RUN),
    Case("ft-batch-zero", lambda i, d: ft(i, d, "--train_batch_size", 0), ("--train_batch_size 0",), FT_RUN),
    Case("ft-valid-batch-zero", lambda i, d: ft(i, d, "--valid_batch_size", 0), ("--valid_batch_size 0",), FT_RUN),
    Case("ft-grad-acc-zero", lambda i, d: ft(i, d, "--grad_acc", 0), ("--grad_acc 0",), FT_RUN),
    Case("ft-clip-nan", lambda i, d: ft(i, d, "--clip", "nan"), ("--clip nan",), FT_RUN),
    Case("ft-label-smooth-one", lambda i, d: ft(i, d, "--label_smooth", 1), ("--label_smooth 1.0",), FT_RUN),
    Case("ft-adam-beta2-one", lambda i, d: ft(i, d, "--adam_beta2", 1), ("--adam_beta2 1.0",), FT_RUN),
    Case("ft-adam-epsilon-zero", lambda i, d: ft(i, d, "--adam_epislon", 0), ("--adam_epislon 0.0",), FT_RUN),
    Case("ft-warmup-negative", lambda i, d: ft(i, d, "--warmup_step", -1), ("--warmup_step -1",), FT_RUN),
    Case("ft-max-step-zero", lambda i, d: ft(i, d, "--max_step", 0), ("--max_step 0",), FT_RUN),
    Case("ft-max-epoch-zero", lambda i, d: ft(i, d, "--max_epoch", 0), ("--max_epoch 0",), FT_RUN),
    Case("ft-log-interval-zero", lambda i, d: ft(i, d, "--log_interval", 0), ("--log_interval 0",), FT_RUN),
    Case("ft-save-interval-zero", lambda i, d: ft(i, d, "--save_interval", 0), ("--save_interval 0",), FT_RUN),
    Case("ft-stop-at-step-zero", lambda i, d: ft(i, d, "--stop_at_step", 0), ("--stop_at_step 0",), FT_RUN),
    Case("ft-random-seed-negative", lambda i, d: ft(i, d, "--random_seed", -1), ("--random_seed -1",), FT_RUN),
    Case("ft-seq-len-one", lambda i, d: ft(i, d, "--seq_len", 1), ("--seq_len 1",), FT_RUN),
    Case("ft-nola-c-nan", lambda i, d: ft(i, d, "--nola_rank", 8, "--nola_qv", "--nola_c", "nan"), ("--nola_c nan",),
         FT_RUN),
    Case("ft-nola-c-zero", lambda i, d: ft(i, d, "--nola_rank", 8, "--nola_qv", "--nola_c", 0), ("--nola_c 0.0",),
         FT_RUN),
    Case("ft-nola-rank-zero", lambda i, d: ft(i, d, "--nola_rank", 0, "--nola_qv"), ("--nola_rank 0",), FT_RUN),
    Case("ft-nola-num-basis-zero", lambda i, d: ft(i, d, "--nola_rank", 8, "--nola_qv", "--nola_num_basis", 0),
         ("--nola_num_basis 0",), FT_RUN),
    Case("ft-nola-seed-64-bits", lambda i, d: ft(i, d, "--nola_qv", "--nola_seed", 1 << 64), ("--nola_seed",), FT_RUN),
    Case("ft-qbits-nine", lambda i, d: ft(i, d, "--nola_qv", "--qnola", "--qbits", 9), ("--qbits 9",), FT_RUN),
    Case("ft-lora-alpha-inf", lambda i, d: ft(i, d, "--lora_dim", 4, "--lora_alpha", "inf"), ("--lora_alpha inf",),
         FT_RUN),
    Case("ft-lora-dropout-one", lambda i, d: ft(i, d, "--lora_dim", 4, "--lora_dropout", 1), ("--lora_dropout 1.0",),
         FT_RUN),
    Case("ft-i-lrs-nan", lambda i, d: ft(i, d, "--scheduler", "cycle", "--i_steps", "0,10", "--i_lrs", "0.1,nan"),
         ("--i_lrs",), FT_RUN),
    # --- gpt2_ft.py: the model card and what depends on it ---------------------------------------
    Case("ft-seq-len-above-positions", lambda i, d: ft(i, d, "--seq_len", 512), ("--seq_len 512", "n_positions=256"),
         FT_RUN),
    Case("ft-card-not-object", lambda i, d: ft(i, d, card=card_file(d, [32, 2, 4])), ("--model_card", "JSON object"),
         FT_RUN),
    Case("ft-card-missing-keys", lambda i, d: ft(i, d, card=card_file(d, {"n_embd": 32})), ("--model_card", "n_layer"),
         FT_RUN),
    Case("ft-card-negative", lambda i, d: ft(i, d, card=card_file(d, {"n_embd": 32, "n_layer": -2, "n_head": 4})),
         ("n_layer=-2", "positive integer"), FT_RUN),
    Case("ft-card-float", lambda i, d: ft(i, d, card=card_file(d, {"n_embd": 32, "n_layer": 2, "n_head": 4.0})),
         ("n_head=4.0",), FT_RUN),
    Case("ft-card-string", lambda i, d: ft(i, d, card=card_file(d, {"n_embd": "32", "n_layer": 2, "n_head": 4})),
         ("n_embd='32'",), FT_RUN),
    Case("ft-card-not-utf8", lambda i, d: ft(i, d, card=card_file(d, b'{"n_embd": 32, "x": "' + LATIN1 + b'"}')),
         ("--model_card", "card.json", "not UTF-8", "byte offset 24"), FT_RUN),
    Case("ft-card-not-json", lambda i, d: ft(i, d, card=card_file(d, b"n_embd = 32\n")), ("card.json", "not valid JSON"),
         FT_RUN),
    # --- gpt2_ft.py: files ----------------------------------------------------------------------
    Case("ft-work-dir-is-file", lambda i, d: ft(i, d, "--work_dir", put(d, "taken", "x")), ("--work_dir", "is a file")),
    Case("ft-work-dir-under-file", lambda i, d: ft(i, d, "--work_dir", Path(put(d, "taken", "x")) / "run"),
         ("--work_dir", "is a file")),
    Case("ft-work-dir-unwritable", lambda i, d: ft(i, d, "--work_dir", UNWRITABLE), ("--work_dir", "cannot write")),
    Case("ft-train-data-not-utf8", lambda i, d: ft(i, d, "--train_data", put(d, "train.jsonl", b'{"context": [1], '
                                                   b'"completion": [2]}\n{"x": "' + LATIN1 + b'"}\n')),
         ("train.jsonl", "not UTF-8", "line 2"), FT_RUN),
    Case("ft-train-data-missing", lambda i, d: ft(i, d, "--train_data", d / "nope.jsonl"), ("nope.jsonl",), FT_RUN),
    # --- gpt2_beam.py ---------------------------------------------------------------------------
    Case("beam-zero", lambda i, d: beam(i, d, "--beam", 0), ("--beam 0",), BEAM_OUT),
    Case("beam-no-checkpoint", lambda i, d: beam(i, d, "--init_checkpoint", ""), ("--init_checkpoint is required",),
         BEAM_OUT),
    Case("beam-wider-than-vocab", lambda i, d: beam(i, d, "--beam", 60000), ("--beam 60000", "vocabulary"), BEAM_OUT),
    Case("beam-eval-len-zero", lambda i, d: beam(i, d, "--eval_len", 0), ("--eval_len 0",), BEAM_OUT),
    Case("beam-eval-len-no-room", lambda i, d: beam(i, d, "--eval_len", 64), ("--eval_len 64", "--seq_len 64"), BEAM_OUT),
    Case("beam-eos-outside-vocab", lambda i, d: beam(i, d, "--eos_token_id", 50257), ("--eos_token_id 50257",), BEAM_OUT),
    Case("beam-eos-negative", lambda i, d: beam(i, d, "--eos_token_id", -1), ("--eos_token_id",), BEAM_OUT),
    Case("beam-length-penalty-nan", lambda i, d: beam(i, d, "--length_penalty", "nan"), ("--length_penalty nan",),
         BEAM_OUT),
    Case("beam-repetition-penalty-zero", lambda i, d: beam(i, d, "--repetition_penalty", 0),
         ("--repetition_penalty 0.0",), BEAM_OUT),
    Case("beam-no-repeat-negative", lambda i, d: beam(i, d, "--no_repeat_ngram_size", -1), ("--no_repeat_ngram_size",),
         BEAM_OUT),
    Case("beam-min-length-negative", lambda i, d: beam(i, d, "--min_length", -3), ("--min_length -3",), BEAM_OUT),
    Case("beam-batch-zero", lambda i, d: beam(i, d, "--batch_size", 0), ("--batch_size 0",), BEAM_OUT),
    Case("beam-threads-zero", lambda i, d: beam(i, d, "--threads", 0), ("--threads 0",), BEAM_OUT),
    Case("beam-seq-len-above-positions", lambda i, d: beam(i, d, "--seq_len", 300), ("--seq_len 300", "n_positions"),
         BEAM_OUT),
    Case("beam-output-is-folder", lambda i, d: beam(i, d, "--output_file", Path(put(d, "out/pred/x", "")).parent.name),
         ("--output_file", "is a folder")),
    Case("beam-output-unwritable", lambda i, d: beam(i, d, "--work_dir", UNWRITABLE), ("--output_file", "cannot write")),
    Case("beam-empty-context", lambda i, d: beam(i, d, data=put(d, "ctx.jsonl", '{"context": [1, 50256], "completion": '
                                                 '[2, 50256]}\n{"context": [], "completion": [3, 50256]}\n')),
         ("ctx.jsonl:2", "empty context"), BEAM_OUT),
    Case("beam-data-not-utf8", lambda i, d: beam(i, d, data=put(d, "bad.jsonl", b'{"context": [1], "completion": [2]}'
                                                 b'\n\n{"' + LATIN1 + b'": 1}\n')),
         ("bad.jsonl", "line 3", "byte offset"), BEAM_OUT),
    # --- gpt2_decode.py -------------------------------------------------------------------------
    Case("decode-id-outside-vocab", lambda i, d: decode(i, d, samples=put(d, "s.jsonl", ok_sample("[464, 50257]"))),
         ("--sample_file", "s.jsonl:2", "token id 50257"), DECODE_OUT),
    Case("decode-id-negative", lambda i, d: decode(i, d, samples=put(d, "s.jsonl", ok_sample("[-5, 464]"))),
         ("s.jsonl:2", "token id -5"), DECODE_OUT),
    Case("decode-sample-not-utf8", lambda i, d: decode(i, d, samples=put(d, "s.jsonl", b'{"id": 0, "p": "'
                                                       + LATIN1 + b'"}\n')),
         ("--sample_file", "s.jsonl", "line 1", "byte offset"), DECODE_OUT),
    Case("decode-input-not-utf8", lambda i, d: decode(i, d, formatted=put(d, "f.jsonl", b'{"context": "'
                                                      + LATIN1 + b'", "completion": "b"}\n')),
         ("f.jsonl", "not UTF-8"), DECODE_OUT),
    Case("decode-sample-is-folder", lambda i, d: decode(i, d, samples=str(Path(put(d, "samples/x", "")).parent)),
         ("--sample_file", "not a regular file"), DECODE_OUT),
    Case("decode-ref-num-zero", lambda i, d: decode(i, d, "--ref_type", "webnlg", "--ref_num", 0, ref=d / "refs"),
         ("--ref_num 0",), ("refs", "pred.txt")),
    Case("decode-pred-is-folder", lambda i, d: decode(i, d, pred=Path(put(d, "preds/x", "")).parent),
         ("--output_pred_file", "is a folder"), ("ref.txt",)),
    Case("decode-pred-under-file", lambda i, d: decode(i, d, pred=Path(put(d, "taken", "x")) / "pred.txt"),
         ("--output_pred_file", "is a file"), ("ref.txt",)),
    Case("decode-ref-folder-is-file", lambda i, d: decode(i, d, "--ref_type", "dart", ref=put(d, "refs", "x")),
         ("--output_ref_file", "is a file"), ("pred.txt",)),
    Case("decode-pred-unwritable", lambda i, d: decode(i, d, pred=UNWRITABLE), ("--output_pred_file", "cannot write"),
         ("ref.txt",)),
    # --- gpt2_encode.py -------------------------------------------------------------------------
    Case("encode-input-not-utf8", lambda i, d: encode(i, d, src=put(d, "f.jsonl", b'{"context": "a", "completion": "'
                                                      + LATIN1 + b'"}\n')),
         ("f.jsonl", "not UTF-8", "byte offset 35"), ("out.jsonl",)),
    Case("encode-output-is-folder", lambda i, d: encode(i, d, out=Path(put(d, "enc/x", "")).parent),
         ("--output", "is a folder")),
    Case("encode-output-unwritable", lambda i, d: encode(i, d, out=UNWRITABLE), ("--output", "cannot write")),
    Case("encode-vocab-missing", lambda i, d: encode(i, d, vocab=d / "novocab"), ("encoder.json", "novocab"),
         ("out.jsonl",)),
    Case("encode-vocab-not-utf8", lambda i, d: encode(i, d, vocab=_vocab_not_utf8(d)), ("encoder.json", "not UTF-8"),
         ("out.jsonl",)),
    # --- format_converting_*.py -----------------------------------------------------------------
    Case("convert-e2e-not-utf8", lambda i, d: py("src/format_converting_e2e.py", put(d, "train.txt", b"name[A]||A is "
                                                 b"fine.\nname[B]||" + LATIN1 + b"\n"), d / "f.jsonl"),
         ("train.txt", "line 2", "byte offset 32"), ("f.jsonl",)),
    Case("convert-webnlg-not-utf8", lambda i, d: py("src/format_converting_webnlg.py",
                                                    put(d, "dev.json", raw_json(WEBNLG_RAW)), d / "f.jsonl"),
         ("dev.json", "not UTF-8"), ("f.jsonl",)),
    Case("convert-dart-not-utf8", lambda i, d: py("src/format_converting_dart.py", put(d, "dev.json", raw_json(DART_RAW)),
                                                  d / "f.jsonl"),
         ("dev.json", "not UTF-8"), ("f.jsonl",)),
    Case("convert-e2e-output-is-folder", lambda i, d: py("src/format_converting_e2e.py", put(d, "t.txt", "n[A]||A.\n"),
                                                         Path(put(d, "f/x", "")).parent),
         ("is a folder",)),
    Case("convert-dart-output-under-file", lambda i, d: py("src/format_converting_dart.py", put(
        d, "dev.json", json.dumps(DART_RAW)), Path(put(d, "taken", "x")) / "f.jsonl"), ("is a file",)),
    Case("convert-webnlg-output-unwritable", lambda i, d: py("src/format_converting_webnlg.py", put(
        d, "dev.json", json.dumps(WEBNLG_RAW)), UNWRITABLE), ("cannot write",)),
    # --- export_hf.py ---------------------------------------------------------------------------
    Case("export-out-is-file", lambda i, d: export(i, d, out=put(d, "taken", "x")), ("--out", "is a file")),
    Case("export-out-unwritable", lambda i, d: export(i, d, out=UNWRITABLE), ("--out", "cannot write")),
    Case("export-card-missing-keys", lambda i, d: export(i, d, card=card_file(d, {"n_head": 4})),
         ("--model_card", "n_embd"), ("hf",)),
    Case("export-nola-c-inf", lambda i, d: export(i, d, "--nola_qv", "--nola_c", "inf"), ("--nola_c inf",), ("hf",)),
    # --- the scorers ----------------------------------------------------------------------------
    Case("score-e2e-ref-not-utf8", lambda i, d: e2e_score(put(d, "ref.txt", b"a b\n" + LATIN1 + b"\n\n"),
                                                          put(d, "pred.txt", "a b\n")),
         ("ref.txt", "line 2", "byte offset 7")),
    Case("score-e2e-sys-not-utf8", lambda i, d: e2e_score(put(d, "ref.txt", "a b\n\n"), put(d, "pred.txt", LATIN1)),
         ("pred.txt", "not UTF-8")),
    Case("score-e2e-ref-is-folder", lambda i, d: e2e_score(str(Path(put(d, "refs/x", "")).parent),
                                                           put(d, "pred.txt", "a\n")), ("refs", "not a regular file")),
    Case("score-webnlg-refs-zero", lambda i, d: webnlg_score(put(d, "reference", "a\n"), put(d, "hyp", "a\n"), "-nr", 0),
         ("-nr 0",)),
    Case("score-webnlg-hyp-not-utf8", lambda i, d: webnlg_score(put(d, "reference", "a\n"), put(d, "hyp", LATIN1),
                                                                "-nr", 1), ("hyp", "not UTF-8")),
    Case("score-webnlg-hyp-is-folder", lambda i, d: webnlg_score(put(d, "reference", "a\n"),
                                                                 str(Path(put(d, "hyp/x", "")).parent), "-nr", 1),
         ("hyp", "not a regular file")),
    Case("score-webnlg-ref-not-utf8", lambda i, d: webnlg_score(_references(d, "a\n", LATIN1), put(d, "hyp", "a\n"),
                                                                "-nr", 2), ("reference1", "not UTF-8")),
    # --- create_datasets.sh ---------------------------------------------------------------------
    Case("create-datasets-mirror-not-folder", lambda i, d: sh("create_datasets.sh", d / "root"), ("NOLA_DATA_MIRROR",),
         ("root/vocab", "root/data"), env=(("NOLA_DATA_MIRROR", str(REPO / "README.md")),)),
    Case("create-datasets-root-under-file", lambda i, d: sh("create_datasets.sh", Path(put(d, "taken", "x")) / "root"),
         ("taken", "is a file")),
    Case("create-datasets-two-args", lambda i, d: sh("create_datasets.sh", d / "a", d / "b"), ("at most one",), ("a", "b")),
    Case("create-datasets-raw-not-utf8", lambda i, d: sh("create_datasets.sh", _root_with_bad_raw(i, d)),
         ("train.txt", "not UTF-8", "line 1"), ("root/data/e2e/train_formatted.jsonl", "root/data/e2e/train.jsonl")),
    # --- download_pretrained_checkpoints.sh -----------------------------------------------------
    Case("download-unknown-model", lambda i, d: sh("download_pretrained_checkpoints.sh", "gpt5", "--root", d / "r"),
         ("gpt5",), ("r",)),
    Case("download-root-is-file", lambda i, d: sh("download_pretrained_checkpoints.sh", "gpt2", "--root",
                                                  put(d, "taken", "x")), ("--root", "is a file")),
    Case("download-mirror-not-folder", lambda i, d: sh("download_pretrained_checkpoints.sh", "gpt2", "--root", d / "r"),
         ("NOLA_DATA_MIRROR",), ("r",), env=(("NOLA_DATA_MIRROR", str(REPO / "README.md")),)),
    Case("download-smollm2-bad-source", lambda i, d: sh("download_pretrained_checkpoints.sh", "smollm2-135m-instruct",
                                                        "--source", "ftp", "--root", d / "r"),
         ("--source", "invalid choice"), ("r",)),
    Case("download-smollm2-cache-is-file", lambda i, d: sh("download_pretrained_checkpoints.sh", "smollm2-135m-instruct",
                                                           "--cache", put(d, "taken", "x"), "--root", d / "r"),
         ("--cache", "is a file"), ("r/pretrained_checkpoints",)),
    Case("download-smollm2-folder-not-ours", lambda i, d: sh(
        "download_pretrained_checkpoints.sh", "smollm2-135m-instruct", "--cache", d / "c", "--root",
        Path(put(d / "r" / "pretrained_checkpoints" / "smollm2-135m-instruct", "config.json", "{}")).parents[2]),
         ("smollm2-135m-instruct exists but was not made by this fetch", "move it away"), ("c",)),
    # --- LLaMA scripts (they import torch before parsing: a few cases) ---------------------------
    Case("llama-ft-lr-nan", lambda i, d: py("src/llama_ft.py", "--model_name_or_path", d / "m", "--output_dir", d / "o",
                                            "--nola_rank", 8, "--lr", "nan"), ("--lr nan",), ("o",)),
    Case("llama-ft-eval-steps-without-eval-dataset", lambda i, d: llama_ft(d, "--eval_steps", 5),
         ("--eval_steps 5", "--eval_dataset"), ("o",)),
    Case("llama-ft-eval-steps-zero", lambda i, d: llama_ft(d, "--eval_steps", 0), ("--eval_steps 0",), ("o",)),
    Case("llama-ft-no-output-dir", lambda i, d: [a for a in llama_ft(d) if a not in ("--output_dir", str(d / "o"))],
         ("--output_dir is required",), ("o",)),
    Case("llama-ft-eval-dataset-missing", lambda i, d: llama_ft(d, "--dataset", _d2t(d), "--eval_dataset",
                                                                d / "none_formatted.jsonl"),
         ("--eval_dataset", "none_formatted.jsonl", "no such file"), ("o",)),
    Case("llama-ft-d2t-not-json", lambda i, d: llama_ft(d, "--dataset", put(d, "x_formatted.jsonl", "{oops\n")),
         ("x_formatted.jsonl:1", "not valid JSON"), ("o",)),
    Case("llama-ft-d2t-empty", lambda i, d: llama_ft(d, "--dataset", put(d, "x_formatted.jsonl", "")),
         ("--dataset", "x_formatted.jsonl", "no records"), ("o",)),
    Case("llama-ft-d2t-encoded-jsonl", lambda i, d: llama_ft(d, "--dataset", put(d, "valid.jsonl", '{"context": [3], '
                                                                                 '"completion": [4]}\n')),
         ("--dataset", "valid.jsonl", "_formatted.jsonl"), ("o",)),
    Case("llama-ft-eval-d2t-no-completion", lambda i, d: llama_ft(d, "--dataset", _d2t(d), "--eval_dataset",
                                                                  put(d, "v_formatted.jsonl", '{"context": "a"}\n')),
         ("v_formatted.jsonl:1", "completion"), ("o",)),
    Case("llama-merge-output-unwritable", lambda i, d: py("src/llama_merge.py", "--model_name_or_path", d / "m",
                                                          "--adapter", d / "a", "--output_dir", UNWRITABLE),
         ("--output_dir", "cannot write")),
    Case("llama-beam-beam-zero", lambda i, d: llama_beam(i, d, "--beam", 0), ("--beam 0",), LLAMA_BEAM_OUT),
    Case("llama-beam-max-contexts-zero", lambda i, d: llama_beam(i, d, "--max_contexts", 0), ("--max_contexts 0",),
         LLAMA_BEAM_OUT),
    Case("llama-beam-data-missing", lambda i, d: llama_beam(i, d, "--data", d / "none.jsonl"), ("--data", "not found"),
         LLAMA_BEAM_OUT),
    Case("llama-beam-adapter-not-a-folder", lambda i, d: llama_beam(i, d, "--adapter", d / "nothing"),
         ("--adapter", "adapter_config.json"), LLAMA_BEAM_OUT),
    Case("llama-beam-pred-unwritable", lambda i, d: llama_beam(i, d, "--output_pred_file", UNWRITABLE),
         ("--output_pred_file", "cannot write"), ("ref.txt",)),
    # --- src/vit_ft.py -----------------------------------------------------------------------------
    Case("vit-train-folder-missing", lambda i, d: vit(d, data=d / "none"), ("--train_data_path", "none/train",
                                                                            "not a folder"), ("o",)),
    Case("vit-val-folder-missing", lambda i, d: vit(d, "--val_data_path", d / "data" / "train"),
         ("--val_data_path", "train/val", "not a folder"), ("o",)),
    Case("vit-class-below-kshot", lambda i, d: vit(d, "--kshot", 4), ("--kshot 4", "class0", "3 images"), ("o",)),
    Case("vit-no-outdir", lambda i, d: vit(d)[:-2], ("--outdir is required",), ("o",)),
    Case("vit-image-corrupt", lambda i, d: vit_damaged(d, "val", "broken.png", b"\x89PNG\r\n\x1a\n garbage"),
         ("broken.png", "not a readable image"), ("o",)),
    Case("vit-image-truncated", lambda i, d: vit_damaged(d, "train", "cut.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF"),
         ("cut.jpg", "not a readable image"), ("o",)),
    Case("vit-class-without-images", lambda i, d: vit_damaged(d, "train", "../class9/notes.txt", b"x"),
         ("class9", "holds no image"), ("o",)),
    Case("vit-lr-nan", lambda i, d: vit(d, "--lr", "nan"), ("--lr nan", "finite"), ("o",)),
    Case("vit-min-lr-above-lr", lambda i, d: vit(d, "--lr", 1e-4, "--min_lr", 1e-3), ("--min_lr",), ("o",)),
    Case("vit-fp16-on-cpu", lambda i, d: vit(d, "--fp16"), ("--fp16", "CUDA"), ("o",)),
    Case("vit-batch-above-images", lambda i, d: vit(d, "--batch_size", 7), ("--batch_size 7",), ("o",)),
    Case("vit-outdir-unwritable", lambda i, d: vit(d)[:-2] + ["--outdir", UNWRITABLE], ("--outdir", "cannot write")),
    Case("vit-resume-missing", lambda i, d: vit(d, "--resume", d / "gone"), ("resume.pt",), ("o",)),
    Case("mmlu-shots-negative", lambda i, d: py("eval/mmlu.py", "--model_name_or_path", d / "m", "--shots", -1,
                                                "--output", d / "r.json"), ("--shots -1",), ("r.json",)),
]


def _d2t(d: Path) -> str:
    """A valid data-to-text training file."""
    return put(d, "train_formatted.jsonl", '{"context": "name : A", "completion": "A ."}\n')


def _vocab_not_utf8(d: Path) -> Path:
    put(d, "v/vocab.bpe", "#version: 0.2\n")
    return Path(put(d, "v/encoder.json", LATIN1)).parent


def _references(d: Path, *contents: str | bytes) -> str:
    """Reference files PREFIX0, PREFIX1, ... with these contents; return PREFIX."""
    for n, content in enumerate(contents):
        put(d, f"reference{n}", content)
    return str(d / "reference")


def _root_with_bad_raw(i: Inputs, d: Path) -> Path:
    """A create_datasets.sh ROOT holding the vocabulary and a Latin-1 E2E train file."""
    root = d / "root"
    shutil.copytree(i.vocab, root / "vocab")
    put(root, "data/e2e/train.txt", b"name[" + LATIN1 + b"]||fine.\n")
    return root


@dataclass
class Outcome:
    argv: list[str]
    folder: Path
    returncode: int
    stderr: str
    new_files: list[str]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run(case: Case, inputs: Inputs, folder: Path) -> Outcome:
    folder.mkdir()
    argv = case.argv(inputs, folder)
    before = _files(folder)
    env = {**os.environ, "NOLA_DATA_MIRROR": str(inputs.mirror), "OMP_NUM_THREADS": "1", **dict(case.env)}
    proc = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    return Outcome(argv, folder, proc.returncode, proc.stderr, sorted(_files(folder) - before))


def _make_inputs(root: Path, mirror: Path) -> Inputs:
    (root / "card.json").write_text(json.dumps({"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256,
                                                "vocab_size": 50257}))
    (root / "data.jsonl").write_text('{"context": [3672, 58, 32, 60, 50256], "completion": [317, 13, 50256]}\n' * 4)
    (root / "data_formatted.jsonl").write_text('{"context": "name[A]", "completion": "A."}\n'
                                               '{"context": "name[B]", "completion": "B."}\n')
    (root / "samples.jsonl").write_text(ok_sample("[464, 3290]"))
    return Inputs(root=root, mirror=mirror)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, mirror) -> dict[str, Outcome]:
    """Every selected case run once, concurrently (one worker per core)."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if item.originalname == "test_bad_input" and item.module is request.module}
    inputs = _make_inputs(tmp_path_factory.mktemp("bad_input_inputs"), mirror)
    cases_root = tmp_path_factory.mktemp("bad_input_cases")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {case.id: pool.submit(_run, case, inputs, cases_root / case.id)
                   for case in CASES if case.id in selected}
        return {case_id: future.result() for case_id, future in futures.items()}


def test_every_command_line_is_covered(tmp_path, mirror) -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(ids) >= 60
    inputs = _make_inputs(tmp_path, mirror)
    scripts = set()
    for case in CASES:
        (tmp_path / case.id).mkdir()
        scripts.add(Path(case.argv(inputs, tmp_path / case.id)[1]).name)
    assert {"gpt2_ft.py", "gpt2_beam.py", "gpt2_decode.py", "gpt2_encode.py", "format_converting_e2e.py",
            "format_converting_webnlg.py", "format_converting_dart.py", "export_hf.py", "measure_scores.py", "eval.py",
            "create_datasets.sh", "download_pretrained_checkpoints.sh"} <= scripts


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, outcomes: dict[str, Outcome]) -> None:
    out = outcomes[case.id]
    assert out.returncode == 2, f"exit {out.returncode} from {out.argv}; stderr:\n{out.stderr}"
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, f"expected one error line; stderr:\n{out.stderr}"
    for text in case.expect:
        assert text in errors[0], f"{text!r} not in: {errors[0]}"
    assert not [p for p in case.absent if (out.folder / p).exists()], errors[0]
    assert out.new_files == [], f"left behind: {out.new_files}"
