"""The fine-tuning / decoding dataset over an encoded jsonl file, and its sharded loader.

Per example (microsoft/LoRA NLG's FT_Dataset without prefix/infix tuning): ``input`` is
context + completion right-padded with 0 to ``seq_len`` (cut at the end), ``target`` the same
sequence shifted by one, ``mask`` 0 for the first ``len(context) - 1`` target positions and 1 for
the completion targets, ``query`` the context kept from the right to ``seq_len - eval_len`` tokens
and right-padded with 0, ``query_len`` its unpadded length, ``length`` the unpadded length of
``input``, ``id`` the line index. :func:`trim_collate` batches them for training and validation
without the padding.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from nola.config import TrainConfig
from nola.errors import fail
from nola.train.textio import text_lines

FIX_HINT = "re-encode it with `bash create_datasets.sh` (or src/gpt2_encode.py --vocab ./vocab)"


def _pad(tokens: list, length: int, value) -> list:
    """``tokens`` cut to ``length`` (keeping the start), then right-padded with ``value``."""
    tokens = tokens[:length]
    return tokens + [value] * (length - len(tokens))


def _check_ids(ids: object, key: str, where: str, vocab_size: int) -> list[int]:
    if not isinstance(ids, list) or not all(type(t) is int for t in ids):
        fail(f"{where}: {key!r} must be a list of integer token ids; {FIX_HINT}")
    if ids and (min(ids) < 0 or max(ids) >= vocab_size):
        bad = next(t for t in ids if t < 0 or t >= vocab_size)
        fail(f"{where}: token id {bad} in {key!r} is outside the vocabulary [0, {vocab_size}); {FIX_HINT}")
    return ids


def read_encoded(path: str | os.PathLike, vocab_size: int = 50257) -> tuple[list[list[int]], list[list[int]]]:
    """Contexts and completions of an encoded jsonl file, checked line by line."""
    contexts, completions = [], []
    if not os.path.exists(path):
        fail(f"encoded jsonl {path} does not exist: make it with `bash create_datasets.sh`")
    for lineno, line in enumerate(text_lines(path, "encoded jsonl"), 1):
        where = f"{path}:{lineno}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            fail(f"{where}: not valid JSON ({exc.msg})")
        if not isinstance(item, dict) or "context" not in item or "completion" not in item:
            fail(f"{where}: expected an object with 'context' and 'completion'; {FIX_HINT}")
        contexts.append(_check_ids(item["context"], "context", where, vocab_size))
        completion = _check_ids(item["completion"], "completion", where, vocab_size)
        if not completion:
            fail(f"{where}: empty completion")
        completions.append(completion)
    if not contexts:
        fail(f"{path} holds no examples: {FIX_HINT}")
    return contexts, completions


class FTDataset(Dataset):
    """Encoded examples of ``path`` as fixed-length tensors for training and decoding."""

    def __init__(self, path: str | os.PathLike, seq_len: int, eval_len: int = 0, vocab_size: int = 50257) -> None:
        if seq_len < 2:
            fail(f"--seq_len {seq_len} is too short: it must be at least 2")
        if not 0 <= eval_len < seq_len:
            fail(f"--eval_len {eval_len} must be in [0, seq_len={seq_len}) so that some context fits")
        self.path = str(path)
        self.seq_len = seq_len
        self.eval_len = eval_len
        self.contexts, self.completions = read_encoded(path, vocab_size)
        if eval_len:  # decoding: a beam starts from the context's last token
            empty = next((i for i, c in enumerate(self.contexts) if not c), None)
            if empty is not None:
                fail(f"{path}:{empty + 1}: empty context; decoding continues a context, so every line needs "
                     f"at least one context token; {FIX_HINT}")
        self.num_unique_contexts = len({tuple(c) for c in self.contexts})

    def __len__(self) -> int:
        return len(self.contexts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        context, completion = self.contexts[index], self.completions[index]
        full = context + completion
        input_len = min(len(full), self.seq_len)
        mask = [0.0] * (len(context) - 1) + [1.0] * max(0, input_len - len(context))
        query_room = self.seq_len - self.eval_len
        query = context[-query_room:]
        return {
            "id": torch.tensor(index, dtype=torch.long),
            "input": torch.tensor(_pad(full, self.seq_len, 0), dtype=torch.long),
            "target": torch.tensor(_pad(full[1:], self.seq_len, 0), dtype=torch.long),
            "mask": torch.tensor(_pad(mask, self.seq_len, 0.0), dtype=torch.float),
            "query": torch.tensor(_pad(query, query_room, 0), dtype=torch.long),
            "query_len": torch.tensor(len(query), dtype=torch.long),
            "length": torch.tensor(input_len, dtype=torch.long),
        }


class JointLM(Dataset):
    """``--obj jlm``: the loss covers every real target token, context included (original's joint_lm)."""

    def __init__(self, dataset: FTDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        ds = self.dataset
        real = min(len(ds.contexts[index]) + len(ds.completions[index]), ds.seq_len) - 1
        item["mask"] = (torch.arange(ds.seq_len) < real).float()
        return item


def training_datasets(cfg: TrainConfig, vocab_size: int) -> tuple[Dataset, Dataset]:
    """The training set (wrapped for ``--obj jlm``) and the validation set of a run."""
    train_ds = FTDataset(cfg.train_data, cfg.seq_len, vocab_size=vocab_size)
    valid_ds = FTDataset(cfg.valid_data, cfg.seq_len, vocab_size=vocab_size)
    return (JointLM(train_ds) if cfg.obj == "jlm" else train_ds), valid_ds


def trim_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The default batch with ``input``, ``target`` and ``mask`` cut to its longest real sequence,
    plus ``positions``: the flat indices into the cut (B, T) grid of the tokens with a loss.

    Padding is on the right and attention is causal, so no real position sees the cut columns and
    every loss is the padded batch's; examples and their order are the sampler's.
    """
    batch = default_collate(items)
    longest = int(batch["length"].max())
    for key in ("input", "target", "mask"):
        batch[key] = batch[key][:, :longest].contiguous()
    batch["positions"] = batch["mask"].flatten().nonzero().squeeze(1)
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    collate_fn: Callable[[list], dict] | None = None,
) -> DataLoader:
    """A DataLoader whose ``DistributedSampler`` gives process ``rank`` of ``world_size`` its own shard.

    Works without ``torch.distributed`` initialised. Call ``loader.sampler.set_epoch(epoch)`` each
    epoch to reshuffle. Without ``drop_last`` the sampler repeats a few examples so every shard has
    the same length (each keeps its ``id``, so decoded outputs can be de-duplicated).
    ``collate_fn`` (e.g. :func:`trim_collate`) replaces the default batching.
    """
    if not 0 <= rank < world_size:
        fail(f"rank {rank} is outside world size {world_size}")
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=0,
                      collate_fn=collate_fn)
