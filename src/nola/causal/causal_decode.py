"""Data-to-text decoding with any ``transformers`` causal LM, straight to the scorers' files.

The whole of ``src/llama_beam.py``: the formatted jsonl's distinct contexts (first-appearance order)
become :mod:`nola.causal.d2t` prompts, each is beam-searched once by :mod:`nola.decoding.beam`'s rule (contexts
batched, stopping at the tokenizer's EOS), and the reference / prediction files are written exactly
as ``gpt2_decode.py`` writes them (:mod:`nola.decoding.decode`), so ``eval/e2e/measure_scores.py`` and the
WebNLG / DART scorers read them unchanged.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from nola.config import BeamSettings, CausalDecodeConfig, LaunchConfig, LlamaSource
from nola.errors import fail
from nola.fileio import check_writable
from nola.log import get_logger

log = get_logger(__name__)


def check_request(source: LlamaSource, cfg: CausalDecodeConfig, device: str) -> None:
    """Every check that needs no weights: outputs writable, data and adapter present, bits usable."""
    from nola.causal.causal_lm import check_bits, check_source

    check_writable(cfg.output_ref_file, "--output_ref_file", folder=cfg.ref_type != "e2e")
    check_writable(cfg.output_pred_file, "--output_pred_file")
    if not Path(cfg.data).is_file():
        fail(f"--data {cfg.data} not found: pass a formatted jsonl (create_datasets.sh writes *_formatted.jsonl)")
    if cfg.adapter is not None and not (Path(cfg.adapter) / "adapter_config.json").is_file():
        fail(f"--adapter {cfg.adapter}: no adapter_config.json there; pass the --output_dir of llama_ft.py")
    if cfg.adapter is not None and source.bits in (4, 8):
        fail(f"--adapter with --bits {source.bits}: an adapter cannot be merged into a quantised base; "
             f"use --bits 16 or 32")
    check_bits(source, device)
    check_source(source)


def records_to_decode(cfg: CausalDecodeConfig) -> tuple[list[dict], list[str]]:
    """The records kept by ``--filter`` and ``--max_contexts`` and their distinct contexts, in order."""
    from nola.decoding.decode import keep_records
    from nola.train.formats import read_formatted

    records = read_formatted(cfg.data)
    if not records:
        fail(f"--data {cfg.data} holds no records: pass a non-empty formatted jsonl")
    records = keep_records(records, cfg.filter, f"--data {cfg.data}")
    contexts = list(dict.fromkeys(r["context"] for r in records))[:cfg.max_contexts]
    if cfg.max_contexts is not None:
        chosen = set(contexts)
        records = [r for r in records if r["context"] in chosen]
    return records, contexts


def decode_prompts(model: torch.nn.Module, tokenizer, contexts: list[str], settings: BeamSettings,
                   batch_size: int) -> list[list[int]]:
    """Beam-search every context's :func:`nola.causal.d2t.prompt_ids`; the generated ids, without their EOS."""
    from nola.decoding.beam import decode_contexts
    from nola.causal.d2t import prompt_ids

    queries = [prompt_ids(tokenizer, c) for c in contexts]
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(map(len, queries))
    if limit is not None and longest + settings.eval_len > limit:
        fail(f"a prompt of {longest} tokens plus --eval_len {settings.eval_len} exceeds the model's "
             f"{limit} positions; lower --eval_len")
    start = time.perf_counter()
    with tqdm(total=len(queries), unit="ex", desc="beam search", dynamic_ncols=True, file=sys.stderr) as bar:
        preds = decode_contexts(model, queries, settings, batch_size, bar.update)
    elapsed = time.perf_counter() - start
    log.info("%d contexts in %.1f s (%.2f s per context, %d generated tokens)", len(queries), elapsed,
             elapsed / len(queries), sum(map(len, preds)))
    return [p[:-1] if p and p[-1] in settings.eos_ids else p for p in preds]


def run_causal_decode(launch: LaunchConfig, source: LlamaSource, cfg: CausalDecodeConfig,
                      settings: BeamSettings) -> int:
    """Load, merge, decode, write; return the number of distinct contexts written."""
    check_request(source, cfg, launch.device)
    records, contexts = records_to_decode(cfg)
    from nola.adapters import set_merged
    from nola.causal.causal_lm import ADAPTER_BASE_FIX, load_causal_lm
    from nola.causal.d2t import eos_id
    from nola.decoding.decode import group_outputs, write_outputs
    from nola.train.distributed import init_distributed
    from nola.hf_adapter import load_adapter
    from nola.causal.peft_baselines import is_peft_folder, merge_peft

    ctx = init_distributed(launch)
    model, tokenizer = load_causal_lm(source, ctx.device)
    if cfg.adapter is not None and is_peft_folder(cfg.adapter):
        model = merge_peft(model, cfg.adapter)
        log.info("PEFT adapter %s merged into the base weights", cfg.adapter)
    elif cfg.adapter is not None:
        load_adapter(model, cfg.adapter, fix=ADAPTER_BASE_FIX)
        set_merged(model, True)
        log.info("adapter %s merged into the base weights: decoding costs exactly the base model", cfg.adapter)
    try:
        settings = dataclasses.replace(settings, eos_ids=(eos_id(tokenizer),))
    except ValueError as exc:
        fail(f"--model_name_or_path {source.model_name_or_path}: {exc}")
    log.info("%s: %d lines, %d distinct contexts, beam %d, eval_len %d, EOS %d", cfg.data, len(records),
             len(contexts), settings.beam, settings.eval_len, settings.eos_ids[0])
    preds = dict(zip(contexts, decode_prompts(model.eval(), tokenizer, contexts, settings, cfg.batch_size)))
    samples = {i: preds[r["context"]] for i, r in enumerate(records)}
    groups = group_outputs(records, samples, tokenizer)
    write_outputs(groups, cfg.ref_type, cfg.output_ref_file, cfg.output_pred_file, cfg.ref_num, cfg.tokenize,
                  cfg.lower, cfg.ref_pad)
    return len(groups)
