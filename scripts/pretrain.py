"""A small GPT-2 pre-trained on text the mirror has, built once and cached by recipe.

No GPT-2 weights can be fetched offline, and a random model gives an adapter nothing to adapt. So
the demo (and anyone without weights) starts from a random GPT-2 with the real 50257-token
vocabulary, fully fine-tuned by ``src/gpt2_ft.py`` (no adapter) on two kinds of text: the WebNLG
dev split as data-to-text pairs (triples → sentence, so the base learns to read a record and copy
from it) and the E2E valid references as plain text (each sentence a document after the EOS token,
no MR: the domain's language, never its MR → sentence task). The E2E test split is never read.
The result is cached under :func:`cache.cache_root` with a key over the recipe's settings, the
hashes of its data files and of the code that trains it, so a later run (or a test) with the same
recipe reuses it and any change rebuilds it.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from nola.config import EOS_ID
from nola.dataset import FIX_HINT
from nola.errors import fail
from nola.fileio import atomic_open
from nola.log import get_logger
from nola.textio import text_lines
from scripts.cache import cached, files_digest
from scripts.tiny import save_random_gpt2

log = get_logger(__name__)
SRC = Path(__file__).resolve().parents[1] / "src"
TRAIN_SCRIPT = SRC / "gpt2_ft.py"


@dataclass(frozen=True)
class BaseRecipe:
    """Shape of the random GPT-2, its pre-training text and the full fine-tuning that pre-trains it.

    ``pairs``: encoded splits trained on as they are (loss on the completion); ``references``:
    encoded splits whose completions alone are trained on, as documents after the EOS token. The
    last ``held_out`` lines of each split are the validation set. 300 steps of batch 16 are 0.7 of
    an epoch; a base pre-trained on DART + WebNLG alone for as long (no E2E text) left NOLA
    nothing to adapt (completion loss 7.3, broken sentences)."""

    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_positions: int = 256
    init_seed: int = 0
    steps: int = 300
    batch: int = 16
    seq_len: int = 96
    lr: float = 0.002
    warmup: int = 30
    weight_decay: float = 0.01
    obj: str = "clm"
    pairs: tuple[str, ...] = ("webnlg_challenge_2017/valid.jsonl",)
    references: tuple[str, ...] = ("e2e/valid.jsonl",)
    held_out: int = 100
    train_seed: int = 1


@dataclass(frozen=True)
class Base:
    """A cached base: ``card`` for --model_card, ``checkpoint`` for --init_checkpoint."""

    folder: Path
    built_now: bool

    @property
    def card(self) -> Path:
        return self.folder / "card.json"

    @property
    def checkpoint(self) -> Path:
        return self.folder / "model.pt"


def code_digest() -> str:
    """Hash of the code that trains a base: gpt2_ft.py and every module of the library, with torch's version."""
    files = [TRAIN_SCRIPT, *sorted((SRC / "nola").glob("*.py"))]
    return files_digest(files) + f"+torch{torch.__version__}"


def _split_lines(path: Path, references: bool) -> list[str]:
    """The encoded lines of ``path``; for a ``references`` split, each completion alone after the EOS token."""
    lines = text_lines(path, "pre-training split")
    if not references:
        return lines
    try:
        completions = [json.loads(line)["completion"] for line in lines]
    except (json.JSONDecodeError, TypeError, KeyError):
        fail(f"{path}: not an encoded split (lines of {{'context', 'completion'}}); {FIX_HINT}")
    return [json.dumps({"context": [EOS_ID], "completion": ids}) + "\n" for ids in completions]


def pretrain_files(data_dir: Path, out: Path, recipe: BaseRecipe) -> tuple[Path, Path]:
    """The recipe's splits of ``data_dir`` (create_datasets.sh's layout) joined into one training
    and one validation file under ``out`` (the last ``held_out`` lines of each split validate)."""
    train: list[str] = []
    valid: list[str] = []
    for split, references in [(s, False) for s in recipe.pairs] + [(s, True) for s in recipe.references]:
        path = data_dir / "data" / split
        if not path.is_file():
            fail(f"{path} not found: run `bash create_datasets.sh {data_dir}` with NOLA_DATA_MIRROR set")
        lines = _split_lines(path, references)
        if len(lines) <= recipe.held_out:
            fail(f"{path}: {len(lines)} lines, not more than the {recipe.held_out} held out for validation")
        train += lines[:-recipe.held_out]
        valid += lines[-recipe.held_out:]
    paths = out / "pretrain_train.jsonl", out / "pretrain_valid.jsonl"
    for path, part in zip(paths, (train, valid)):
        with atomic_open(path) as handle:
            handle.writelines(part)
    return paths


def train_command(recipe: BaseRecipe, card: Path, init: Path, train: Path, valid: Path, work: Path) -> list[str]:
    """gpt2_ft.py full fine-tuning (no adapter flags) of ``init`` as the recipe says."""
    r = recipe
    return [sys.executable, str(TRAIN_SCRIPT), "--train_data", str(train), "--valid_data", str(valid),
            "--model_card", str(card), "--init_checkpoint", str(init),
            "--train_batch_size", str(r.batch), "--valid_batch_size", str(r.batch), "--seq_len", str(r.seq_len),
            "--obj", r.obj, "--lr", str(r.lr), "--weight_decay", str(r.weight_decay), "--warmup_step", str(r.warmup),
            "--scheduler", "linear", "--max_step", str(r.steps), "--save_interval", str(10 * r.steps),
            "--log_interval", str(max(1, r.steps // 6)), "--eval_interval", str(10 * r.steps),
            "--work_dir", str(work), "--random_seed", str(r.train_seed)]


def pretrained_base(data_dir: Path, work: Path, recipe: BaseRecipe = BaseRecipe()) -> Base:
    """The cached base for ``recipe`` on the dev texts of ``data_dir``; built first if missing."""
    train, valid = pretrain_files(data_dir, work, recipe)
    key = {"recipe": dataclasses.asdict(recipe), "data": files_digest([train, valid]), "code": code_digest()}

    def build(folder: Path) -> None:
        init = save_random_gpt2(folder / "init", recipe.n_embd, recipe.n_layer, recipe.n_head,
                                recipe.n_positions, seed=recipe.init_seed)
        run = folder / "run"
        log.info("pre-training the base (%d layers x %d, %d steps of batch %d x %d tokens) -> %s",
                 recipe.n_layer, recipe.n_embd, recipe.steps, recipe.batch, recipe.seq_len, folder.parent)
        with open(folder / "pretrain.log", "w", encoding="utf-8") as out:
            done = subprocess.run(train_command(recipe, init / "card.json", init / "pytorch_model.bin",
                                                train, valid, run), stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            tail = (folder / "pretrain.log").read_text(encoding="utf-8").strip().splitlines()[-1:]
            fail(f"pre-training the base failed ({' '.join(tail)}); re-run to retry")
        (run / f"model.{recipe.steps}.pt").rename(folder / "model.pt")
        (run / "log.jsonl").rename(folder / "log.jsonl")
        (init / "card.json").rename(folder / "card.json")
        shutil.rmtree(run)
        shutil.rmtree(init)

    folder, built = cached("demo-base", key, build)
    return Base(folder, built)
