"""Data-to-text (E2E, WebNLG, DART) on any ``transformers`` causal LM: the prompt and the target.

The GPT-2 pipeline feeds ``context ids + <|endoftext|> + completion ids + <|endoftext|>``; a causal LM
with its own tokenizer gets the same shape in text: the context (the E2E meaning representation or
the linearised triples of :mod:`nola.train.formats`) followed by `` ||``, then the completion after one space,
then the tokenizer's end-of-sequence token. The prompt is tokenized as the tokenizer does by default
(LLaMA-2's adds its BOS, SmolLM2's adds nothing), the target without special tokens; the two are
tokenized separately, so training and generation see the same prompt ids and the loss covers exactly
the target and its EOS.
"""
from __future__ import annotations

SEPARATOR = " ||"


def prompt_text(context: str) -> str:
    """``"<context> ||"``: what the model reads before it writes."""
    return context.strip() + SEPARATOR


def target_text(completion: str) -> str:
    """``" <completion>"``: what the model learns to write after the prompt (EOS appended as an id)."""
    return " " + completion.strip()


def eos_id(tokenizer) -> int:
    """The tokenizer's end-of-sequence id (generation stops there; training ends every target with it)."""
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos_token_id: data-to-text needs one to end targets")
    return int(tokenizer.eos_token_id)


def prompt_ids(tokenizer, context: str) -> list[int]:
    """Token ids of the prompt, with the special tokens the tokenizer adds by default."""
    return list(tokenizer(prompt_text(context))["input_ids"])


def target_ids(tokenizer, completion: str) -> list[int]:
    """Token ids of the target: the completion without special tokens, then EOS."""
    return list(tokenizer(target_text(completion), add_special_tokens=False)["input_ids"]) + [eos_id(tokenizer)]
