"""MMLU k-shot accuracy of a causal LM, as Hendrycks et al.'s test/evaluate.py scores it.

The prompt for a question of subject ``s`` is the header "The following are multiple choice
questions (with answers) about <s with '_' -> ' '>.\\n\\n" (the original joins the words with a leading
space each, so "about" is followed by two spaces), the first ``k`` dev examples each as
"question\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer: X\\n\\n", then the question in the same form
ending in "Answer:". Examples are dropped from the end while the prompt exceeds ``max_len`` tokens.
The prediction is the highest of the next-token logits of " A", " B", " C", " D" (the token each
letter becomes after "Answer:"). Accuracy is reported per subject, averaged over subjects (as
UCDvision/NOLA's qlora.py reports ``mmlu_test_accuracy``) and over all questions (the original's
"weighted" accuracy).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from nola.config import LaunchConfig, LlamaSource, MMLUConfig
from nola.errors import fail
from nola.fileio import atomic_open, check_writable
from nola.log import get_logger
from nola.train.textio import read_text

log = get_logger(__name__)

CHOICES = "ABCD"
Row = list[str]  # question, A, B, C, D, answer letter


def read_rows(path: Path) -> list[Row]:
    """The rows of one MMLU CSV (no header); one-line errors for a malformed file."""
    if not path.is_file():
        fail(f"{path} is missing: MMLU needs dev/<subject>_dev.csv and <split>/<subject>_<split>.csv "
             f"(scripts/llama/download_data.sh)")
    rows = list(csv.reader(io.StringIO(read_text(path, "MMLU file"), newline="")))
    for number, row in enumerate(rows, start=1):
        if len(row) != 6 or row[5] not in CHOICES:
            fail(f"{path} line {number}: expected 6 columns (question, A, B, C, D, answer letter A-D), "
                 f"got {len(row)}{' ending ' + repr(row[-1]) if row else ''}")
    return rows


def subjects_in(data_dir: Path, split: str) -> list[str]:
    """Every subject with a ``<split>/<subject>_<split>.csv``, sorted."""
    folder = data_dir / split
    names = sorted(p.name[: -len(f"_{split}.csv")] for p in folder.glob(f"*_{split}.csv")) if folder.is_dir() else []
    if not names:
        fail(f"--data_dir {data_dir}: no {split}/<subject>_{split}.csv files; run scripts/llama/download_data.sh")
    return names


def header(subject: str) -> str:
    return "The following are multiple choice questions (with answers) about {}.\n\n".format(
        "".join(" " + word for word in subject.split("_")))


def format_example(row: Row, include_answer: bool = True) -> str:
    text = row[0] + "".join(f"\n{letter}. {option}" for letter, option in zip(CHOICES, row[1:5])) + "\nAnswer:"
    return text + f" {row[5]}\n\n" if include_answer else text


def prompt(subject: str, dev: Sequence[Row], question: Row, shots: int) -> str:
    """The ``shots``-shot prompt for ``question``."""
    return header(subject) + "".join(format_example(row) for row in dev[:shots]) + format_example(question, False)


def choice_token_ids(tokenizer) -> list[int]:
    """The token of each letter as it follows "Answer:" (one token, the prompt's tokens unchanged)."""
    stem = tokenizer("Answer:", add_special_tokens=False)["input_ids"]
    ids = []
    for letter in CHOICES:
        full = tokenizer(f"Answer: {letter}", add_special_tokens=False)["input_ids"]
        if len(full) != len(stem) + 1 or full[: len(stem)] != stem:
            fail(f"this tokenizer does not make ' {letter}' after 'Answer:' a single token; MMLU scoring needs it")
        ids.append(full[-1])
    return ids


@torch.no_grad()
def evaluate(model: nn.Module, tokenizer, data_dir: str | Path, split: str = "test", shots: int = 5,
             max_len: int = 2048, subjects: Sequence[str] | None = None) -> dict:
    """Accuracy per subject and averaged; ``model`` returns ``.logits`` like a transformers causal LM."""
    data_dir = Path(data_dir)
    names = list(subjects) if subjects else subjects_in(data_dir, split)
    letters = torch.tensor(choice_token_ids(tokenizer))
    device = next(model.parameters()).device
    model.eval()
    per_subject, correct_all, total_all = {}, 0, 0
    for subject in names:
        dev = read_rows(data_dir / "dev" / f"{subject}_dev.csv")
        test = read_rows(data_dir / split / f"{subject}_{split}.csv")
        if not test:
            fail(f"{data_dir / split / f'{subject}_{split}.csv'} has no questions: fix or remove it")
        correct, fewest = 0, shots
        for row in test:
            k = min(shots, len(dev))
            ids = tokenizer(prompt(subject, dev, row, k))["input_ids"]
            while len(ids) > max_len and k > 0:
                k -= 1
                ids = tokenizer(prompt(subject, dev, row, k))["input_ids"]
            fewest = min(fewest, k)
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1]
            correct += int(CHOICES[int(logits[letters.to(logits.device)].argmax())] == row[5])
        per_subject[subject] = {"accuracy": correct / len(test), "correct": correct, "total": len(test),
                                "fewest_shots": fewest}
        correct_all, total_all = correct_all + correct, total_all + len(test)
    return {"split": split, "shots": shots, "subjects": per_subject,
            "average": sum(s["accuracy"] for s in per_subject.values()) / len(per_subject),
            "weighted_average": correct_all / max(total_all, 1)}


def run_mmlu(launch: LaunchConfig, source: LlamaSource, cfg: MMLUConfig) -> dict:
    """Load the base (and ``--adapter``, merged unless the base is 4/8-bit), score, write ``cfg.output``."""
    from nola.causal.causal_lm import ADAPTER_BASE_FIX, check_bits, check_source, load_causal_lm
    from nola.hf_adapter import load_adapter
    from nola.adapters import set_merged

    check_writable(cfg.output, "--output")
    check_bits(source, launch.device)
    check_source(source)
    data_dir = Path(cfg.data_dir)
    subjects = [s.strip() for s in cfg.subjects.split(",") if s.strip()] if cfg.subjects else \
        subjects_in(data_dir, cfg.split)
    for subject in subjects:
        read_rows(data_dir / "dev" / f"{subject}_dev.csv")
    if cfg.adapter is not None and not (Path(cfg.adapter) / "adapter_config.json").is_file():
        fail(f"--adapter {cfg.adapter}: no adapter_config.json there; pass the --output_dir of llama_ft.py")
    if launch.threads is not None:
        torch.set_num_threads(launch.threads)
    cuda = launch.device != "cpu" and torch.cuda.is_available()
    if launch.device == "cuda" and not cuda:
        fail("--device cuda but no CUDA device is visible: use --device cpu")
    model, tokenizer = load_causal_lm(source, torch.device("cuda", 0) if cuda else torch.device("cpu"))
    if cfg.adapter is not None:
        load_adapter(model, cfg.adapter, fix=ADAPTER_BASE_FIX)
        if source.bits not in (4, 8):
            set_merged(model, True)
    results = evaluate(model, tokenizer, data_dir, cfg.split, cfg.shots, cfg.max_len, subjects)
    results.update(model=source.model_name_or_path, adapter=cfg.adapter, bits=source.bits)
    for subject, row in results["subjects"].items():
        log.info("%-40s %6.4f (%d / %d)", subject, row["accuracy"], row["correct"], row["total"])
    log.info("MMLU %s %d-shot: average over %d subjects %.4f, over all questions %.4f", cfg.split, cfg.shots,
             len(results["subjects"]), results["average"], results["weighted_average"])
    with atomic_open(cfg.output) as handle:
        handle.write(json.dumps(results, indent=1) + "\n")
    return results
