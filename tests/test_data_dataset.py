"""FTDataset tensors checked value by value on a hand-made file; sharded loading; bad files."""
from __future__ import annotations

import json
import random
import time

import pytest
import torch

from nola.gpt2.data import FTDataset, make_loader
from nola.errors import UsageError

E = 50256
EXAMPLES = [
    {"context": [10, 11, E], "completion": [20, 21, E]},
    {"context": [30, 31, 32, 33, E], "completion": [40, E]},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def two(tmp_path):
    return _write(tmp_path / "two.jsonl", EXAMPLES)


def _values(item):
    return {k: v.tolist() for k, v in item.items()}


def test_two_examples_value_by_value(two):
    data = FTDataset(two, seq_len=8, eval_len=2)
    assert len(data) == 2 and data.num_unique_contexts == 2
    assert _values(data[0]) == {
        "id": 0,
        "input": [10, 11, E, 20, 21, E, 0, 0],
        "target": [11, E, 20, 21, E, 0, 0, 0],
        "mask": [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        "query": [10, 11, E, 0, 0, 0],
        "query_len": 3,
        "length": 6,
    }
    assert _values(data[1]) == {
        "id": 1,
        "input": [30, 31, 32, 33, E, 40, E, 0],
        "target": [31, 32, 33, E, 40, E, 0, 0],
        "mask": [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
        "query": [30, 31, 32, 33, E, 0],
        "query_len": 5,
        "length": 7,
    }
    item = data[1]
    assert {k: v.dtype for k, v in item.items()} == {
        "id": torch.long, "input": torch.long, "target": torch.long,
        "mask": torch.float, "query": torch.long, "query_len": torch.long, "length": torch.long}
    assert item["id"].dim() == 0 and item["query_len"].dim() == 0


def test_truncation_keeps_the_start_of_input_and_the_end_of_query(two):
    data = FTDataset(two, seq_len=6, eval_len=3)
    assert _values(data[1]) == {
        "id": 1,
        "input": [30, 31, 32, 33, E, 40],      # cut at the end
        "target": [31, 32, 33, E, 40, E],
        "mask": [0.0, 0.0, 0.0, 0.0, 1.0, 0.0],  # FT_Dataset: len(context)-1 zeros, input_len-len(context) ones
        "query": [32, 33, E],                   # kept from the right
        "query_len": 3,
        "length": 6,                            # input_len: cut at seq_len
    }


def test_mask_selects_exactly_the_completion_targets(tmp_path):
    rng = random.Random(0)
    rows = [{"context": [rng.randrange(E) for _ in range(rng.randint(1, 9))] + [E],
             "completion": [rng.randrange(E) for _ in range(rng.randint(1, 9))] + [E]} for _ in range(30)]
    data = FTDataset(_write(tmp_path / "r.jsonl", rows), seq_len=24)
    for row, i in zip(rows, range(len(rows))):
        item = data[i]
        n_ctx, n_all = len(row["context"]), len(row["context"]) + len(row["completion"])
        picked = item["target"][item["mask"] == 1].tolist()
        assert picked == row["completion"]
        assert item["mask"].sum().item() == n_all - n_ctx
        assert item["input"][:n_all].tolist() == row["context"] + row["completion"]


def test_unique_contexts_counts_repeats_once(tmp_path):
    rows = [EXAMPLES[0], EXAMPLES[0], EXAMPLES[1], dict(EXAMPLES[0], completion=[5, E])]
    assert FTDataset(_write(tmp_path / "d.jsonl", rows), seq_len=8).num_unique_contexts == 2


def test_distributed_shards_are_disjoint_and_cover_the_data(tmp_path):
    rows = [{"context": [i, E], "completion": [i + 100, E]} for i in range(10)]
    data = FTDataset(_write(tmp_path / "ten.jsonl", rows), seq_len=6)
    shards = []
    for rank in range(2):
        loader = make_loader(data, batch_size=2, shuffle=True, seed=7, rank=rank, world_size=2)
        loader.sampler.set_epoch(3)
        shards.append([i for batch in loader for i in batch["id"].tolist()])
    assert len(shards[0]) == len(shards[1]) == 5
    assert set(shards[0]).isdisjoint(shards[1]) and set(shards[0]) | set(shards[1]) == set(range(10))
    single = make_loader(data, batch_size=4, shuffle=False, rank=0, world_size=1)
    batches = list(single)
    assert [b["input"].shape for b in batches] == [torch.Size([4, 6])] * 2 + [torch.Size([2, 6])]
    assert [i for b in batches for i in b["id"].tolist()] == list(range(10))
    dropped = make_loader(data, batch_size=4, shuffle=False, world_size=3, rank=2, drop_last=True)
    assert [b["id"].tolist() for b in dropped] == []  # 3 examples per rank: no full batch of 4


@pytest.mark.parametrize("line, message", [
    ('{"context": [1, 50257], "completion": [2]}', ":2: token id 50257 in 'context' is outside the vocabulary"),
    ('{"context": [1], "completion": [-1]}', ":2: token id -1 in 'completion'"),
    ('{"context": [1], "completion": []}', ":2: empty completion"),
    ('{"context": [1]}', ":2: expected an object with 'context' and 'completion'"),
    ('{"context": [1], "completion": [2.5]}', ":2: 'completion' must be a list of integer token ids"),
    ('{"context": [1], "completion": [2]', ":2: not valid JSON"),
])
def test_bad_encoded_lines_stop_before_training(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(EXAMPLES[0]) + "\n" + line + "\n")
    with pytest.raises(UsageError, match=message):
        FTDataset(path, seq_len=8)


def test_bad_lengths_and_missing_file(two, tmp_path):
    with pytest.raises(UsageError, match="--eval_len 8 must be in"):
        FTDataset(two, seq_len=8, eval_len=8)
    with pytest.raises(UsageError, match="create_datasets.sh"):
        FTDataset(tmp_path / "nope.jsonl", seq_len=8)
    with pytest.raises(UsageError, match="outside the vocabulary"):
        FTDataset(two, seq_len=8, vocab_size=40)  # a smaller vocabulary rejects ids >= 40


def test_loading_e2e_train_sized_file_takes_seconds(tmp_path):
    rng = random.Random(1)
    path = tmp_path / "train.jsonl"
    with open(path, "w") as handle:
        for _ in range(42061):  # E2E train size, typical lengths (about 30 + 25 tokens)
            row = {"context": [rng.randrange(E) for _ in range(30)] + [E],
                   "completion": [rng.randrange(E) for _ in range(25)] + [E]}
            handle.write(json.dumps(row) + "\n")
    start = time.perf_counter()
    data = FTDataset(path, seq_len=512, eval_len=64)
    elapsed = time.perf_counter() - start
    assert len(data) == 42061
    assert elapsed < 15, f"loading took {elapsed:.1f}s"
