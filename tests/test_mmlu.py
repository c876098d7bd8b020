"""MMLU scoring on a hand-made set in the official layout: the 5-shot prompt pinned, and accuracies
equal to hand-computed values for tiny LLaMAs built so that their answer is known."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from eval.mmlu import main
from nola.config import LoRAConfig
from nola.errors import run_cli
from nola.hf_adapter import save_adapter
from nola.lora_inject import inject_lora
from nola.causal.mmlu import choice_token_ids, prompt, read_rows
from scripts.tiny_llama import save_tiny_llama, words_of

# subject -> test answers; every subject has the same 5 dev examples
ANSWERS = {"abstract_algebra": "BAB", "college_biology": "CB", "world_religions": "DDBA"}
DEV = [[f"Dev question {i} ?", f"a{i}", f"b{i}", f"c{i}", f"d{i}", "ABCDA"[i]] for i in range(5)]


def write_set(root: Path) -> Path:
    for split in ("dev", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for subject, answers in ANSWERS.items():
        with open(root / "dev" / f"{subject}_dev.csv", "w", newline="") as handle:
            csv.writer(handle).writerows(DEV)
        rows = [[f"Question {j} of {subject}, with a comma ?", "one", "two", "three", "four", letter]
                for j, letter in enumerate(answers)]
        with open(root / "test" / f"{subject}_test.csv", "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    return root


@pytest.fixture(scope="module")
def mmlu(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mmlu")
    data = write_set(root / "data")
    texts = [" ".join(" ".join(r) for r in read_rows(p)) for p in data.rglob("*.csv")]
    texts.append(prompt("abstract_algebra", DEV, DEV[0], 5))
    model = save_tiny_llama(root / "model", words_of(texts + ["Answer: A B C D"]))
    return {"data": data, "model": model, "root": root}


def test_the_five_shot_prompt_is_the_original_one(mmlu):
    """Hendrycks et al. test/evaluate.py gen_prompt + format_example, typed out here (its
    format_subject puts a space before every word, hence 'about  abstract algebra')."""
    dev = read_rows(mmlu["data"] / "dev" / "abstract_algebra_dev.csv")
    question = read_rows(mmlu["data"] / "test" / "abstract_algebra_test.csv")[0]
    shots = "".join(f"Dev question {i} ?\nA. a{i}\nB. b{i}\nC. c{i}\nD. d{i}\nAnswer: {'ABCDA'[i]}\n\n" for i in range(5))
    assert prompt("abstract_algebra", dev, question, 5) == (
        "The following are multiple choice questions (with answers) about  abstract algebra.\n\n" + shots +
        "Question 0 of abstract_algebra, with a comma ?\nA. one\nB. two\nC. three\nD. four\nAnswer:")
    assert prompt("abstract_algebra", dev, question, 0).count("Answer:") == 1


def answering(mmlu: dict, letter: str, out: Path) -> Path:
    """The tiny LLaMA rebuilt so it always answers ``letter``: with o_proj and down_proj zero every
    layer passes the residual stream through, so the last hidden state is the embedding e of ':'
    (every prompt ends in 'Answer:'); lm_head is zero except the row of ``letter``, set to e, whose
    logit e.RMSNorm(e) > 0 beats the other letters' 0."""
    tok = AutoTokenizer.from_pretrained(mmlu["model"])
    model = AutoModelForCausalLM.from_pretrained(mmlu["model"])
    colon = tok(":", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[choice_token_ids(tok)["ABCD".index(letter)]] = model.model.embed_tokens.weight[colon]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def expected(letter: str) -> dict[str, float]:
    return {s: answers.count(letter) / len(answers) for s, answers in ANSWERS.items()}


@pytest.mark.parametrize("letter", ["B", "D"])
def test_accuracy_equals_the_hand_computed_value(mmlu, tmp_path, letter):
    """Always B: 2/3, 1/2, 1/4 (average 17/36, all questions 4/9); always D: 0, 0, 1/2 (1/6, 2/9)."""
    model = answering(mmlu, letter, tmp_path / "model")
    out = tmp_path / "results.json"
    main(["--model_name_or_path", str(model), "--bits", "32", "--device", "cpu", "--threads", "1",
          "--data_dir", str(mmlu["data"]), "--output", str(out)])
    results = json.loads(out.read_text())
    per_subject = {s: r["accuracy"] for s, r in results["subjects"].items()}
    assert per_subject == pytest.approx(expected(letter))
    hand = {"B": (17 / 36, 4 / 9), "D": (1 / 6, 2 / 9)}[letter]
    assert (results["average"], results["weighted_average"]) == pytest.approx(hand)
    assert results["shots"] == 5 and results["subjects"]["world_religions"]["total"] == 4


def test_the_adapter_is_loaded_and_merged(mmlu, tmp_path):
    """A LoRA adapter on lm_head (r = 1) built by hand so ΔW adds 2e to the row of C: the always-B
    model then always answers C (2 e.n > e.n); the adapter must be loaded and merged for that."""
    model_dir = answering(mmlu, "B", tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    colon = tok(":", add_special_tokens=False)["input_ids"][0]
    inject_lora(model, LoRAConfig(dim=1, alpha=1.0), ["lm_head"])
    with torch.no_grad():
        model.lm_head.lora_A.copy_(model.model.embed_tokens.weight[colon][None])
        model.lm_head.lora_B.zero_()
        model.lm_head.lora_B[choice_token_ids(tok)[2], 0] = 2.0
    save_adapter(model, tmp_path / "adapter")
    out = tmp_path / "results.json"
    main(["--model_name_or_path", str(model_dir), "--bits", "32", "--device", "cpu", "--threads", "1",
          "--data_dir", str(mmlu["data"]), "--adapter", str(tmp_path / "adapter"), "--output", str(out),
          "--subjects", "abstract_algebra,college_biology"])
    results = json.loads(out.read_text())
    assert {s: r["accuracy"] for s, r in results["subjects"].items()} == pytest.approx(
        {s: v for s, v in expected("C").items() if s != "world_religions"})


def test_a_long_prompt_drops_dev_examples_and_bad_files_are_one_line_errors(mmlu, tmp_path, capsys):
    model = answering(mmlu, "A", tmp_path / "model")
    common = ["--model_name_or_path", str(model), "--bits", "32", "--device", "cpu", "--threads", "1",
              "--subjects", "abstract_algebra"]
    out = tmp_path / "short.json"
    main(common + ["--data_dir", str(mmlu["data"]), "--max_len", "40", "--output", str(out)])
    short = json.loads(out.read_text())["subjects"]["abstract_algebra"]
    assert short["accuracy"] == pytest.approx(1 / 3) and short["fewest_shots"] < 5
    bad = write_set(tmp_path / "bad")
    (bad / "test" / "abstract_algebra_test.csv").write_text("only,three,columns\n")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(common + ["--data_dir", str(bad), "--output", str(tmp_path / "bad.json")]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "expected 6 columns" in err[0], err
    assert not (tmp_path / "bad.json").exists()
