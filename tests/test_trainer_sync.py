"""The one Trainer reads nothing of a tensor on the host between its log lines, validations and saves
(issue 26): on CUDA each ``.item()``, ``.tolist()``, ``bool()``, ``float()`` or ``int()`` of a device
tensor waits for the device. Counted here on CPU over ``Trainer.fit`` for ``gpt2_ft.py`` (``--grad_acc 2``,
clipping on) and ``llama_ft.py`` (2 micro-batches an update), leaving out what is not the loop's: the
model's forward (``task.loss_sum``), the data (collated on the host) and the log line, validation and
save, where the Trainer reads on purpose; those reads are counted apart to show the count works."""
from __future__ import annotations

import contextlib
from collections import Counter

import pytest
import torch

from nola.train.trainer import Trainer
from src.gpt2_ft import main as gpt2_main
from src.llama_ft import main as llama_main
from tests.test_llama_ft import NOLA as LLAMA_NOLA, common as llama_common, setup  # noqa: F401  (setup: fixture)
from tests.test_train_run import NOLA, base, common, data  # noqa: F401  (base, data: fixtures)

READS = ("item", "tolist", "__bool__", "__float__", "__int__")


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """Counts of tensor reads by where they happen: "loop" (the Trainer's own per-step code) or "purpose"
    (a log line, validation or save)."""
    counts: Counter = Counter()
    where = ["outside"]

    @contextlib.contextmanager
    def at(place: str):
        where.append(place)
        try:
            yield
        finally:
            where.pop()

    for name in READS:
        def read(self, *args, _original=getattr(torch.Tensor, name), **kwargs):
            counts[where[-1]] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, read)

    def during(place: str, method):
        def wrapped(*args, **kwargs):
            with at(place):
                return method(*args, **kwargs)
        return wrapped

    for name in ("_log", "validate", "save", "check_finite"):
        monkeypatch.setattr(Trainer, name, during("purpose", getattr(Trainer, name)))
    fit = Trainer.fit

    def watched_fit(self):
        task = self.task
        steps, loss_sum = task.steps, task.loss_sum

        def data(step):
            items = steps(step)
            while True:
                with at("outside"):
                    item = next(items, None)
                if item is None:
                    return
                yield item

        task.steps, task.loss_sum = data, during("outside", loss_sum)
        with at("loop"):
            return fit(self)

    monkeypatch.setattr(Trainer, "fit", watched_fit)
    return counts


def test_gpt2_steps_read_nothing_on_the_host(tiny_gpt2, base, data, tmp_path, reads):
    gpt2_main(common(tiny_gpt2, base, data["small"], data["valid"]) + NOLA + [
        "--nola_num_basis", "64", "--lr", "0.05", "--max_step", "8", "--grad_acc", "2", "--clip", "1.0",
        "--train_batch_size", "2", "--log_interval", "4", "--eval_interval", "4", "--save_interval", "4",
        "--work_dir", str(tmp_path / "run")])
    assert reads["loop"] == 0 and reads["purpose"] > 0, reads


def test_llama_updates_read_nothing_on_the_host(setup, tmp_path, reads):
    llama_main(llama_common(setup, tmp_path / "run") + LLAMA_NOLA + [
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2", "--max_steps", "4",
        "--max_grad_norm", "0.3", "--logging_steps", "2", "--save_steps", "4"])
    assert reads["loop"] == 0 and reads["purpose"] > 0, reads
