"""The LLaMA-2 path (src/llama_ft.py -> src/llama_merge.py -> src/llama_beam.py) on real LLaMA-architecture
weights: SmolLM2-135M-Instruct from the `smollm2_dir` fixture, NOLA on q_proj and v_proj for a few steps of
an Alpaca-format file written here, then the merged folder against the adapter loaded on the base, and
generation from the merged folder against generation from the base with the adapter.
Kept cheap for CI: 2 updates of one short example each (a forward pass of this model on ~50 tokens
takes ~1 s on two free cores, ~8 s on the loaded shared machine)."""
from __future__ import annotations

import json
import math

import torch

from nola.adapters import set_merged
from nola.hf_adapter import load_adapter
from src.llama_beam import main as generate
from src.llama_ft import main as train
from src.llama_merge import main as merge

RECORDS = [
    {"instruction": "Describe the restaurant in one sentence.", "input": "name : Blue Spice | Type : coffee shop",
     "output": "Blue Spice is a coffee shop."},
    {"instruction": "Describe the restaurant in one sentence.", "input": "name : The Punter | food : Italian",
     "output": "The Punter serves Italian food."},
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    {"instruction": "Describe the restaurant in one sentence.", "input": "name : Aromi | area : riverside",
     "output": "Aromi is by the riverside."},
]


def test_nola_training_then_merge_on_smollm2_gives_the_adapted_logits(smollm2_dir, tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    data, adapter, merged_dir = tmp_path / "alpaca.json", tmp_path / "nola", tmp_path / "merged"
    data.write_text(json.dumps(RECORDS))
    model = ["--model_name_or_path", str(smollm2_dir), "--bits", "32"]
    train(model + ["--dataset", str(data), "--device", "cpu", "--output_dir", str(adapter),
                   "--target_modules", "q_proj,v_proj", "--nola_rank", "4", "--nola_num_basis", "16",
                   "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1", "--max_steps", "2",
                   "--lr", "0.05", "--source_max_len", "48", "--target_max_len", "8", "--logging_steps", "1"])
    rows = [json.loads(line) for line in (adapter / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(row["loss"]) for row in rows)
    header = json.loads((adapter / "adapter_config.json").read_text())
    assert header["adapter"] == "nola" and header["target_modules"] == ["q_proj", "v_proj"]
    merge(model + ["--adapter", str(adapter), "--output_dir", str(merged_dir)])

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = tokenizer("Describe the restaurant. name : Blue Spice", return_tensors="pt").input_ids
    base = LlamaForCausalLM.from_pretrained(smollm2_dir).eval()
    merged = LlamaForCausalLM.from_pretrained(merged_dir).eval()
    assert not any("nola" in key for key in merged.state_dict())
    assert not (merged_dir / "adapter_config.json").exists() and (merged_dir / "tokenizer.json").is_file()
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        with_adapter = load_adapter(base, adapter)
        adapted = with_adapter(input_ids=ids).logits
        folded = merged(input_ids=ids).logits
        set_merged(with_adapter, True)
        merged_here = with_adapter(input_ids=ids).logits
    assert (adapted - plain).abs().max() > 1e-2
    # The saved folder is the adapter folded in, bit for bit; folded and unfolded sums round apart in
    # float32 (here ~5e-5 at logits up to ~30 after 30 layers), so that comparison is relative to the scale.
    assert torch.equal(folded, merged_here)
    assert (folded - adapted).abs().max() <= 1e-5 * adapted.abs().max()

    # Generation: the merged folder writes what the base with the adapter (merged at load) writes.
    data = tmp_path / "test_formatted.jsonl"
    data.write_text(json.dumps({"context": "name : Blue Spice | Type : coffee shop", "completion": "Blue Spice."}) + "\n")
    beam = ["--bits", "32", "--device", "cpu", "--data", str(data), "--beam", "2", "--eval_len", "6"]
    for name, source in (("merged", ["--model_name_or_path", str(merged_dir)]), ("adapter", ["--model_name_or_path", str(smollm2_dir), "--adapter", str(adapter)])):
        generate(source + beam + ["--output_ref_file", str(tmp_path / f"{name}_ref.txt"),
                                  "--output_pred_file", str(tmp_path / f"{name}_pred.txt")])
    predicted = (tmp_path / "merged_pred.txt").read_text()
    assert predicted.strip() and predicted == (tmp_path / "adapter_pred.txt").read_text()
    assert (tmp_path / "merged_ref.txt").read_text() == "Blue Spice.\n\n"
