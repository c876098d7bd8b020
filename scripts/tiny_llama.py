"""A small random LLaMA and a word-level tokenizer, saved as a ``transformers`` model folder, for tests.

The tokenizer splits on whitespace and punctuation and knows only the words it is given (others
become ``<unk>``); ``<s>``, ``</s>``, ``<unk>`` and ``<pad>`` are its special tokens, so the folder
loads with ``AutoTokenizer`` / ``AutoModelForCausalLM`` exactly as a real LLaMA-2 folder does.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import torch

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct word and punctuation tokens of ``texts``, in first-seen order."""
    seen: dict[str, None] = {}
    for text in texts:
        for word in re.findall(r"\w+|[^\w\s]+", text):
            seen.setdefault(word, None)
    return list(seen)


def save_tiny_llama(out_dir: str | Path, words: Iterable[str], hidden: int = 32, layers: int = 2,
                    intermediate: int = 48, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """Write a random ``LlamaForCausalLM`` (4 heads, 2 key/value heads) and its tokenizer; return the folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(list(SPECIALS) + [w for w in dict.fromkeys(words) if w not in SPECIALS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                         initializer_range=initializer_range)
    LlamaForCausalLM(config).save_pretrained(out)
    return out
