"""The GPT-2 side of the beam rule (:mod:`nola.decoding.beam`): the fork's :class:`ForkSteps`, and
``gpt2_beam.py``'s work over an encoded data file: each distinct context decoded once, shared out over
the ranks, gathered, and written as the sample file ``gpt2_decode.py`` reads."""
from __future__ import annotations

import json
import os
import sys
import time

from tqdm import tqdm

from nola.config import BeamSettings
from nola.decoding.beam import decode_contexts
from nola.errors import fail
from nola.fileio import atomic_open
from nola.gpt2.dataset import FTDataset
from nola.gpt2.model import GPT2LMModel
from nola.log import get_logger
from nola.train.distributed import DistContext, gather_objects

log = get_logger(__name__)


class ForkSteps:
    """:class:`nola.decoding.beam.Steps` of the forked GPT-2 (its cache: one (key, value) pair per layer)."""

    def __init__(self, model: GPT2LMModel) -> None:
        self.model, self.past = model, None

    def context(self, ids, position_ids, key_mask):
        logits, self.past = self.model(ids, position_ids=position_ids, key_mask=key_mask, last_only=True)
        return logits[:, -1].float()

    def extend(self, select, tokens, position_ids, key_mask):
        past = [(key.index_select(0, select), value.index_select(0, select)) for key, value in self.past]
        logits, self.past = self.model(tokens, past=past, position_ids=position_ids, key_mask=key_mask)
        return logits[:, -1].float()


def unique_queries(dataset: FTDataset) -> tuple[list[list[int]], list[int]]:
    """The distinct decoding contexts of ``dataset`` (first-appearance order) and, for every input
    line, the index of its context. Test files repeat a context once per reference."""
    index: dict[tuple[int, ...], int] = {}
    line_to_query = []
    for i in range(len(dataset)):
        item = dataset[i]
        query = tuple(item["query"][: int(item["query_len"])].tolist())
        line_to_query.append(index.setdefault(query, len(index)))
    return [list(q) for q in index], line_to_query


def predict_dataset(model: GPT2LMModel, dataset: FTDataset, settings: BeamSettings, batch_size: int,
                    ctx: DistContext) -> list[list[int]] | None:
    """Beam-search each distinct context of ``dataset`` once, this rank's share of them, and gather
    the results; rank 0 gets one prediction per input line (duplicates share theirs), others None."""
    queries, line_to_query = unique_queries(dataset)
    longest = max(len(q) for q in queries)
    if longest + settings.eval_len > model.config.n_positions:
        fail(f"--data {dataset.path}: a context of {longest} tokens plus --eval_len {settings.eval_len} "
             f"exceeds the model's {model.config.n_positions} positions; lower --seq_len or --eval_len")
    by_length = sorted(range(len(queries)), key=lambda i: -len(queries[i]))
    mine = by_length[ctx.rank::ctx.world_size]
    log.info("%s: %d lines, %d distinct contexts (%d on this rank), beam %d, eval_len %d",
             dataset.path, len(dataset), len(queries), len(mine), settings.beam, settings.eval_len)
    start = time.perf_counter()
    with tqdm(total=len(mine), unit="ex", desc="beam search", disable=not ctx.is_main,
              dynamic_ncols=True, file=sys.stderr) as bar:
        preds = decode_contexts(model, [queries[i] for i in mine], settings, batch_size, bar.update)
    elapsed = time.perf_counter() - start
    tokens = sum(len(p) for p in preds)
    log.info("rank %d: %d contexts in %.1f s (%.2f contexts/s, %.0f generated tokens/s)",
             ctx.rank, len(mine), elapsed, len(mine) / max(elapsed, 1e-9), tokens / max(elapsed, 1e-9))
    shares = gather_objects(list(zip(mine, preds)), ctx)
    if not ctx.is_main:
        return None
    by_query: dict[int, list[int]] = {}
    for share in shares:
        by_query.update(share)
    return [by_query[q] for q in line_to_query]


def write_predictions(path: str | os.PathLike, predictions: list[list[int]]) -> None:
    """``{"id": line index, "predict": token ids}`` per input line, in input order, atomically."""
    with atomic_open(path, "w") as handle:
        for i, pred in enumerate(predictions):
            handle.write(json.dumps({"id": i, "predict": pred}) + "\n")
