"""Beam search exactly as microsoft/LoRA's NLG ``gpt2_beam.py`` decides, with a KV cache.

The rule (which the published E2E / WebNLG / DART numbers were produced with):

* scores are summed log-softmax over the generated tokens; step 0 expands only the first beam of
  every example (all beams start from the same context);
* before the log-softmax, the CTRL repetition penalty (on the logits of tokens already generated),
  the ``min_length`` EOS ban and the no-repeat-n-gram ban (n-grams of the generated tokens only)
  are applied;
* the ``beam`` best (hypothesis, token) pairs of each example are kept, with no replacement: after
  every step each kept hypothesis whose last token is an EOS becomes a finished candidate scored
  ``sum_logprob / n_generated ** length_penalty``; an example keeps its best candidate (a later
  one replaces it only if strictly better) and that beam's score becomes ``-inf``;
* after ``eval_len`` steps every kept hypothesis is a candidate, scored the same way.

The implementation differs only in ways that cannot change the result: the context is run once per
example (not once per beam), contexts of different lengths share a batch through left padding and
a key mask, and an example stops as soon as no kept hypothesis can still beat its best candidate
(every later candidate extends a kept hypothesis, so its score is at most
``max_kept_sum / L ** length_penalty`` for some remaining length ``L``).

The rule is written once and drives any model through :class:`Steps` (run the contexts; keep some
cache rows and append one token per row): the forked GPT-2 (:class:`nola.gpt2.beam.ForkSteps`, its list of
key/value pairs) and any ``transformers`` causal LM (:class:`CausalLMSteps`, its ``DynamicCache``).
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F

from nola.config import BeamSettings


def _process_logits(logits: torch.Tensor, history: torch.Tensor, s: BeamSettings, eos: torch.Tensor) -> None:
    """In place: repetition penalty, min-length EOS ban, no-repeat-n-gram ban (generated tokens only)."""
    n_gen = history.shape[1]
    if s.repetition_penalty != 1.0 and n_gen:
        seen = logits.gather(1, history)
        logits.scatter_(1, history, torch.where(seen < 0, seen * s.repetition_penalty, seen / s.repetition_penalty))
    if n_gen < s.min_length:
        logits[:, eos] = -float("inf")
    n = s.no_repeat_ngram_size
    if n and n_gen >= n:
        windows = history.unfold(1, n, 1)                       # (rows, n_gen-n+1, n)
        prefix = history[:, n_gen - n + 1:]                      # the last n-1 tokens
        hit = (windows[:, :, :-1] == prefix[:, None, :]).all(-1)
        fill = torch.full(hit.shape, float("inf"), device=logits.device).masked_fill_(hit, -float("inf"))
        logits.scatter_reduce_(1, windows[:, :, -1], fill, reduce="amin")


class _Best:
    """Per example: the best finished candidate so far (score, tokens) under the strict-> rule."""

    def __init__(self, num: int, eval_len: int, device: torch.device) -> None:
        self.score = torch.full((num,), -float("inf"), device=device)
        self.has = torch.zeros(num, dtype=torch.bool, device=device)
        self.tokens = torch.zeros(num, eval_len, dtype=torch.long, device=device)
        self.length = torch.zeros(num, dtype=torch.long, device=device)

    def offer(self, examples: torch.Tensor, scores: torch.Tensor, history: torch.Tensor,
              is_cand: torch.Tensor, divisor: float) -> None:
        """Offer the hypotheses flagged ``is_cand`` (rows of ``examples``, beams in order)."""
        k, n_gen = scores.shape[1], history.shape[1]
        cand = torch.where(is_cand, scores / divisor, -float("inf"))
        top, pick = cand.max(dim=1).values, cand.argmax(dim=1)  # ties: the first beam, as the original's loop
        first = is_cand.int().argmax(dim=1)   # all candidates -inf: the first one counts
        pick = torch.where(top == -float("inf"), first, pick)
        any_cand = is_cand.any(dim=1)
        take = any_cand & (~self.has[examples] | (self.score[examples] < top))
        chosen = history.view(-1, k, n_gen)[torch.arange(len(examples), device=history.device), pick]
        self.score[examples] = torch.where(take, top, self.score[examples])
        self.tokens[examples, :n_gen] = torch.where(take[:, None], chosen, self.tokens[examples, :n_gen])
        self.length[examples] = torch.where(take, n_gen, self.length[examples])
        self.has[examples] |= any_cand


def _left_pad(queries: Sequence[Sequence[int]], device: torch.device):
    lens = torch.tensor([len(q) for q in queries], dtype=torch.long)
    width = int(lens.max())
    ids = torch.zeros(len(queries), width, dtype=torch.long)
    for row, q in enumerate(queries):
        ids[row, width - len(q):] = torch.as_tensor(list(q), dtype=torch.long)
    if bool((lens == width).all()):
        return ids.to(device), None, None, lens.to(device)
    pad = (width - lens)[:, None]
    cols = torch.arange(width)[None, :]
    return ids.to(device), (cols - pad).clamp(min=0).to(device), (cols >= pad).to(device), lens.to(device)


class Steps(Protocol):
    """A model's forward passes as the rule needs them; the object keeps the KV cache of the live rows."""

    def context(self, ids: torch.Tensor, position_ids: torch.Tensor | None,
                key_mask: torch.Tensor | None) -> torch.Tensor:
        """Run the left-padded contexts (``key_mask``: False at padding; None when there is none);
        return float logits (rows, vocab) at every row's last position."""

    def extend(self, select: torch.Tensor, tokens: torch.Tensor, position_ids: torch.Tensor,
               key_mask: torch.Tensor | None) -> torch.Tensor:
        """Keep cache rows ``select`` (in that order, repeats allowed), append ``tokens`` (rows, 1) at
        ``position_ids`` (rows, 1); return float logits (rows, vocab) of the new position."""


class CausalLMSteps:
    """:class:`Steps` of a ``transformers`` causal LM: left padding is its ``attention_mask`` plus
    explicit ``position_ids`` (each row counts from its first real token), the cache is the
    ``DynamicCache`` the first call returns, reordered in place (``reorder_cache``: index_select of
    every layer's keys and values), and the LM head runs at the last position only."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.cache = model, None

    def _run(self, ids, position_ids, key_mask):
        mask = None if key_mask is None else key_mask.long()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                         cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = out.cache
        return out.logits[:, -1].float()

    def context(self, ids, position_ids, key_mask):
        return self._run(ids, position_ids, key_mask)

    def extend(self, select, tokens, position_ids, key_mask):
        self.cache.reorder_cache(select)
        return self._run(tokens, position_ids, key_mask)


def steps_for(model: torch.nn.Module) -> Steps:
    """The model's own steps where it has them (the forked GPT-2's ``beam_steps``: this layer does not
    import the GPT-2 reproduction), else a ``transformers`` causal LM's."""
    own = getattr(model, "beam_steps", None)
    return own() if own is not None else CausalLMSteps(model)


@torch.inference_mode()
def beam_search(model: torch.nn.Module, queries: Sequence[Sequence[int]], settings: BeamSettings) -> list[list[int]]:
    """Decode every context of ``queries`` together with ``model`` (the forked GPT-2 or a
    ``transformers`` causal LM); return each one's best hypothesis (token ids, ending with its EOS
    when it finished before ``eval_len``). Results do not depend on batching."""
    if not queries or any(len(q) == 0 for q in queries):
        raise ValueError("beam_search needs non-empty contexts")
    s, k = settings, settings.beam
    device = next(model.parameters()).device
    eos = torch.tensor(s.eos_ids, dtype=torch.long, device=device)
    ids, position_ids, key_mask, lens = _left_pad(queries, device)
    steps = steps_for(model)
    logits = steps.context(ids, position_ids, key_mask)

    num = len(queries)
    best = _Best(num, s.eval_len, device)
    examples = torch.arange(num, device=device)         # original index of each live example
    history = torch.zeros(num, 0, dtype=torch.long, device=device)
    _process_logits(logits, history, s, eos)
    scores, tokens = F.log_softmax(logits, dim=-1).topk(k, dim=1)   # step 0: beam 0 only
    select = torch.arange(num, device=device).repeat_interleave(k)  # cache rows for the next step
    history = tokens.reshape(-1, 1)
    positions = lens.repeat_interleave(k)
    divisors = {n: float(n ** s.length_penalty) for n in range(1, s.eval_len + 1)}  # n_gen ** length_penalty

    for n_gen in range(1, s.eval_len + 1):
        finished = torch.isin(tokens, eos)
        best.offer(examples, scores, history, finished, divisors[n_gen])
        scores = scores.masked_fill(finished, -float("inf"))
        if n_gen == s.eval_len:
            best.offer(examples, scores, history, torch.ones_like(scores, dtype=torch.bool), divisors[n_gen])
            break
        live_max = scores.max(dim=1).values
        reach = torch.maximum(live_max / divisors[n_gen + 1], live_max / divisors[s.eval_len])
        done = best.has[examples] & (best.score[examples] >= reach)
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            rows = (keep[:, None] * k + torch.arange(k, device=device)).reshape(-1)
            examples, scores, tokens = examples[keep], scores[keep], tokens[keep]
            select, history, positions = select[rows], history[rows], positions[rows]

        if key_mask is not None:
            key_mask = torch.cat([key_mask[select], key_mask.new_ones(len(select), 1)], dim=1)
        logits = steps.extend(select, tokens.reshape(-1, 1), positions[:, None], key_mask)
        _process_logits(logits, history, s, eos)
        step = scores[:, :, None] + F.log_softmax(logits, dim=-1).view(len(examples), k, -1)
        vocab = step.shape[-1]
        scores, flat = step.view(len(examples), -1).topk(k, dim=1)
        beam_of, tokens = flat // vocab, flat % vocab
        select = (torch.arange(len(examples), device=device)[:, None] * k + beam_of).reshape(-1)
        history = torch.cat([history[select], tokens.reshape(-1, 1)], dim=1)
        positions = positions[select] + 1

    lengths = best.length.tolist()
    return [row[:n] for row, n in zip(best.tokens.tolist(), lengths)]


def decode_contexts(model: torch.nn.Module, queries: Sequence[Sequence[int]], settings: BeamSettings,
                    batch_size: int, progress: Callable[[int], None] | None = None) -> list[list[int]]:
    """Beam-search every context, ``batch_size`` at a time (longest first, so batches hold similar
    lengths); return the predictions in the order of ``queries``."""
    order = sorted(range(len(queries)), key=lambda i: -len(queries[i]))
    out: list[list[int] | None] = [None] * len(queries)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, pred in zip(chunk, beam_search(model, [queries[i] for i in chunk], settings)):
            out[i] = pred
        if progress is not None:
            progress(len(chunk))
    return out  # type: ignore[return-value]
