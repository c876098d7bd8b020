"""The package's layering, read from the source files' imports, so a new import that breaks it fails here.

    library   the top of ``nola`` (and ``nola.peft``): imports only the library; with torch alone
              (no loralib, transformers or PEFT at import time)
    infra     ``nola.train`` (then ``nola.decoding``): the library and infra below it in this list
    reproductions  ``nola.gpt2``, ``nola.causal``, ``nola.vit`` (and the scorers, ``nola.metrics``):
              library + infra, never each other
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "nola"
FOREIGN = ("loralib", "transformers", "peft")
# Which layers a layer may import (itself included); "library" is every module at the top of `nola`.
ALLOWED = {
    "library": {"library"},
    "train": {"library", "train"},
    "decoding": {"library", "train", "decoding"},
    "gpt2": {"library", "train", "decoding", "gpt2"},
    "causal": {"library", "train", "decoding", "causal"},
    "vit": {"library", "train", "vit"},
    "metrics": {"library", "train", "metrics"},
}


def module_file(module: str, src: Path = SRC) -> Path | None:
    """The file of ``nola.a.b`` under ``src`` (``a/b.py`` or ``a/b/__init__.py``); None if not a module."""
    parts = module.split(".")[1:]
    for candidate in (src.joinpath(*parts).with_suffix(".py") if parts else None, src.joinpath(*parts, "__init__.py")):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def layer_of(module: str, src: Path = SRC) -> str:
    """``nola.gpt2.model`` -> "gpt2"; a module at the top of ``nola``, or in ``nola.peft``, -> "library"."""
    parts = module.split(".")
    if len(parts) > 1 and (src / parts[1]).is_dir() and parts[1] != "peft":
        return parts[1]
    return "library"


def imports(module: str, src: Path = SRC, top_level: bool = True) -> set[str]:
    """Modules ``nola.<module>`` imports: its top-level import statements (what runs at import time;
    ``if TYPE_CHECKING:`` blocks never run), or with ``top_level=False`` every import in the file,
    those inside functions included. ``from nola.x import y`` counts ``nola.x.y`` when that is a module."""
    tree = ast.parse(module_file(module, src).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}", src))
    return names


def nola_modules(src: Path = SRC) -> list[str]:
    return sorted("nola" + "".join(f".{p}" for p in f.relative_to(src).with_suffix("").parts if p != "__init__")
                  for f in src.rglob("*.py"))


def violations(src: Path = SRC, top_level: bool = True) -> list[tuple[str, str]]:
    """Every (module, imported nola module) pair that breaks :data:`ALLOWED`."""
    return [(module, name) for module in nola_modules(src)
            for name in sorted(imports(module, src, top_level))
            if name.startswith("nola.") and module_file(name, src)
            and layer_of(name, src) not in ALLOWED[layer_of(module, src)]]


def closure(start: str) -> set[str]:
    """Every ``nola`` module reached at import time from ``start``."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += [name for name in imports(module) if name.startswith("nola.") and module_file(name)]
    return seen


def test_every_module_has_a_layer_and_the_layers_are_the_packages():
    layers = {layer_of(m) for m in nola_modules()}
    assert layers == set(ALLOWED), layers
    assert layer_of("nola.adapters") == layer_of("nola.peft.model") == "library"
    assert layer_of("nola.train.resume") == "train" and layer_of("nola.causal.llama_train") == "causal"


def test_each_layer_imports_only_what_is_above_it():
    """At import time and inside functions alike (an import deferred to a call is still a dependency)."""
    assert violations() == []
    assert violations(top_level=False) == []


def test_gpt2_and_causal_never_import_each_other_and_infra_only_the_library():
    for module in nola_modules():
        layers = {layer_of(name) for name in imports(module, top_level=False)
                  if name.startswith("nola.") and module_file(name)}
        mine = layer_of(module)
        if mine in ("gpt2", "causal"):
            assert not layers & ({"gpt2", "causal"} - {mine}), (module, layers)
        if mine == "train":
            assert layers <= {"library", "train"}, (module, layers)


# The library's two bridges to foreign packages, imported only on demand: loralib's LoRA and the PEFT method.
BRIDGES = ("nola.lora_inject", "nola.peft")


def test_the_library_imports_nothing_foreign():
    library = [m for m in nola_modules() if layer_of(m) == "library" and not m.startswith(BRIDGES)]
    for module in library:
        for name in closure(module):
            assert layer_of(name) == "library" and not name.startswith(BRIDGES), (module, name)
            foreign = {i.split(".")[0] for i in imports(name)} & set(FOREIGN)
            assert not foreign, (name, foreign)


def test_the_rule_reader_sees_a_violation(tmp_path):
    """The reader finds real imports (the fork and the LoRA injector import loralib; GPT-2's builder
    reaches the fork), and reports a causal-LM module that imports GPT-2 code, at the top or inside a
    function, and an infra module that imports a reproduction."""
    assert "loralib" in imports("nola.gpt2.model") and "loralib" in imports("nola.lora_inject")
    assert "nola.gpt2.model" in closure("nola.gpt2.build")
    assert "nola.causal.d2t" in imports("nola.causal.causal_data")  # `from nola.causal import d2t`
    for folder in ("gpt2", "causal", "train"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "errors.py").write_text("")
    (tmp_path / "gpt2" / "model.py").write_text("from nola.errors import fail\n")
    (tmp_path / "causal" / "loop.py").write_text("from nola.gpt2.model import GPT2LMModel\n")
    (tmp_path / "causal" / "late.py").write_text("def f():\n    from nola.gpt2 import model\n")
    (tmp_path / "train" / "cli.py").write_text("import nola.causal.loop\n")
    assert violations(tmp_path) == [("nola.causal.loop", "nola.gpt2.model"), ("nola.train.cli", "nola.causal.loop")]
    assert ("nola.causal.late", "nola.gpt2.model") in violations(tmp_path, top_level=False)


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
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FOREIGN!r} and sys.modules[m])
assert not loaded, loaded
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
