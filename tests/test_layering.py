"""The package's layering: the generic adapter library (the top of ``nola``) imports neither loralib,
transformers, PEFT nor the GPT-2 or causal-LM reproductions, and works with torch alone; the rule is read
from the source files' imports, so a new import that breaks it fails here."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "nola"
# The generic library: what `nola.inject` / `nola.save_adapter` / `nola.load_adapter` stand on.
LIBRARY = ("basis", "quant", "layers", "adapters", "hf_adapter", "config", "errors", "fileio", "integrity", "log")
FOREIGN = ("loralib", "transformers", "peft")


def top_level_imports(module: str) -> set[str]:
    """Modules imported at import time by ``nola.<module>``: its top-level import statements (imports
    inside functions run on demand; ``if TYPE_CHECKING:`` blocks never run)."""
    tree = ast.parse((SRC / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def closure(start: str) -> set[str]:
    """Every ``nola`` module reached at import time from ``nola.<start>``."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += [name[len("nola."):] for name in top_level_imports(module) if name.startswith("nola.")
                 and (SRC / f"{name[len('nola.'):]}.py").is_file()]
    return seen


def test_the_library_imports_only_the_library_and_nothing_foreign():
    for module in LIBRARY:
        reached = closure(module)
        assert reached <= set(LIBRARY), (module, sorted(reached - set(LIBRARY)))
        for name in reached:
            foreign = {i.split(".")[0] for i in top_level_imports(name)} & set(FOREIGN)
            assert not foreign, (name, foreign)


def test_the_rule_reader_sees_a_violation():
    """The reader above finds GPT-2's fork importing loralib and the LoRA injector (so it can fail)."""
    assert "loralib" in top_level_imports("model") and "loralib" in top_level_imports("lora_inject")
    assert "model" in closure("build")


def test_inject_save_load_merge_work_with_torch_alone(tmp_path):
    code = f"""
import sys
for name in {FOREIGN!r}:
    sys.modules[name] = None  # importing any of them now raises
import torch, nola

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)
    def forward(self, x):
        return self.down(torch.relu(self.up(x)))

torch.manual_seed(0)
net, x = Net(), torch.randn(3, 8)
base = net(x)
nola.inject(net, nola.NOLAConfig(rank=2, num_basis=5), ["up", "down"])
with torch.no_grad():
    for p in net.parameters():
        if p.requires_grad:
            p.uniform_(-1, 1)
adapted = net(x)
nola.save_adapter(net, {str(tmp_path)!r})
torch.manual_seed(0)
again = Net()  # the same base weights as net's
nola.load_adapter(again, {str(tmp_path)!r})
nola.set_merged(again, True)
assert not torch.allclose(adapted, base)
torch.testing.assert_close(again(x), adapted, rtol=1e-5, atol=1e-6)
print(sorted(m for m in sys.modules if m.split(".")[0] in ("loralib", "transformers", "peft") and sys.modules[m]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip() == "[]"
