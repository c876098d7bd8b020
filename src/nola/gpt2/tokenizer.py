"""GPT-2's byte-level BPE from ``encoder.json`` + ``vocab.bpe``, and encoding formatted jsonl files.

:func:`load_tokenizer` builds the fast (Rust ``tokenizers``) tokenizer the pipeline uses.
:func:`load_reference_tokenizer` builds the slow pure-Python BPE that the original pipeline's
``encoder.py`` implements (transformers' byte-level BPE with GPT-2's split pattern); it exists to
check and benchmark the fast one, which must give the same ids on every line.

Encoding (the paper's ``gpt2_encode.py --add_bos --add_eos``): context ids + [50256];
completion ids = BPE(" " + completion) + [50256].
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from nola.config import EOS_ID
from nola.errors import fail
from nola.fileio import atomic_open, check_writable
from nola.train.formats import read_formatted
from nola.train.textio import read_json, read_text

EOS_TOKEN = "<|endoftext|>"
VOCAB_FILES = ("encoder.json", "vocab.bpe")
_BATCH = 4096


def _vocab_paths(vocab_dir: str | os.PathLike) -> tuple[Path, Path]:
    paths = tuple(Path(vocab_dir) / name for name in VOCAB_FILES)
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        fail(
            f"{' and '.join(missing)} not found in {vocab_dir}: run `bash create_datasets.sh` "
            "(it fetches ./vocab, from NOLA_DATA_MIRROR when set) or pass --vocab DIR"
        )
    return paths


def _read_merges(path: Path) -> list[tuple[str, str]]:
    lines = read_text(path, "vocabulary file").split("\n")
    return [tuple(line.split()) for line in lines[1:] if line]  # line 0 is the "#version" header


def read_encoder(vocab_dir: str | os.PathLike) -> dict[str, int]:
    """``encoder.json`` of ``vocab_dir``: token -> id (50257 entries for GPT-2, <|endoftext|> included)."""
    path = _vocab_paths(vocab_dir)[0]
    vocab = read_json(path, "vocabulary file")
    if not isinstance(vocab, dict) or not all(type(i) is int for i in vocab.values()):
        fail(f"vocabulary file {path}: expected a JSON object of token -> integer id; fetch it again with "
             f"`bash create_datasets.sh`")
    return vocab


def load_tokenizer(vocab_dir: str | os.PathLike):
    """The fast GPT-2 tokenizer (a transformers ``PreTrainedTokenizerFast``) from ``vocab_dir``.

    Text equal to ``<|endoftext|>`` is encoded as plain text, as the original encoder does; id
    50256 decodes to ``<|endoftext|>``. Decoding keeps spaces exactly (no clean-up).
    """
    vocab, merges = read_encoder(vocab_dir), _read_merges(_vocab_paths(vocab_dir)[1])
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,
        split_special_tokens=True,
    )


def load_reference_tokenizer(vocab_dir: str | os.PathLike):
    """The slow pure-Python GPT-2 BPE, for equivalence checks and benchmarks only.

    transformers no longer ships a slow GPT-2 tokenizer; its CLVP tokenizer runs the same
    byte-level BPE loop and split pattern, and with its English text normaliser switched off it
    is the reference algorithm of OpenAI's ``encoder.py``.
    """
    from transformers.models.clvp.tokenization_clvp import ClvpTokenizer

    class _ReferenceGPT2(ClvpTokenizer):
        @property
        def normalizer(self):
            return _identity

    encoder_path, merges_path = _vocab_paths(vocab_dir)
    return _ReferenceGPT2(
        str(encoder_path),
        str(merges_path),
        unk_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        split_special_tokens=True,
    )


def _identity(text: str) -> str:
    return text


def encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text (no special tokens added), encoded in batches."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), _BATCH):
        ids.extend(tokenizer(texts[start : start + _BATCH], add_special_tokens=False)["input_ids"])
    return ids


def encode_records(tokenizer, records: list[dict], add_bos: bool = True, add_eos: bool = True) -> list[dict]:
    """Formatted records -> ``{"context": ids, "completion": ids}`` as the paper's ``gpt2_encode.py``."""
    contexts = encode_texts(tokenizer, [r["context"] for r in records])
    completions = encode_texts(tokenizer, [" " + r["completion"] for r in records])
    bos = [EOS_ID] if add_bos else []
    eos = [EOS_ID] if add_eos else []
    return [{"context": c + bos, "completion": p + eos} for c, p in zip(contexts, completions)]


def encode_file(
    src: str | os.PathLike, dst: str | os.PathLike, vocab_dir: str | os.PathLike, add_bos: bool = True, add_eos: bool = True
) -> dict[str, int]:
    """Formatted jsonl ``src`` -> encoded jsonl ``dst``; return counts (examples, unique contexts, tokens)."""
    if not Path(src).is_file():
        fail(f"input {src} not found: make it with `bash create_datasets.sh`")
    check_writable(dst, "--output")
    _vocab_paths(vocab_dir)
    records = read_formatted(src)
    encoded = encode_records(load_tokenizer(vocab_dir), records, add_bos, add_eos)
    with atomic_open(dst, "w") as handle:
        for item in encoded:
            handle.write(json.dumps(item) + "\n")
    return {
        "examples": len(encoded),
        "unique_contexts": len({r["context"] for r in records}),
        "tokens": sum(len(e["context"]) + len(e["completion"]) for e in encoded),
    }
