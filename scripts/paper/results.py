"""Result rows of the paper scripts (``results/<dataset>.jsonl``) and the table beside the paper.

A *row* is one finished run of a ``scripts/paper/*.sh`` script: its name, model, dataset, trainable
parameters, adapter bytes, scores, git commit, date and the commands it ran, one JSON object per
line. ``results/published.json`` holds the published numbers, each with its source. Scores are kept
as the scorers print them; :data:`METRICS` says how each is shown (the E2E scorer prints BLEU,
METEOR and ROUGE-L as fractions, the papers print them times 100).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import subprocess
from pathlib import Path

from nola.errors import fail

DATASETS = ("e2e", "webnlg", "dart", "cifar100", "cub200", "caltech101")
VIT_DATASETS = DATASETS[3:]  # k-shot classification (scripts/paper/vit_*.sh): accuracy, mean and std over runs
# dataset -> [(metric key, factor from scorer output to the papers' units, decimals shown)]
METRICS: dict[str, list[tuple[str, float, int]]] = {
    "e2e": [("BLEU", 100, 1), ("NIST", 1, 2), ("METEOR", 100, 1), ("ROUGE_L", 100, 1), ("CIDEr", 1, 2)],
    "dart": [("BLEU", 1, 1), ("METEOR", 1, 2), ("TER", 1, 2)],
    "webnlg": [(f"{metric}_{part}", 1, places)
               for metric, places in (("BLEU", 1), ("METEOR", 2), ("TER", 2)) for part in "USA"],
    **{name: [("ACC", 100, 1), ("ACC_STD", 100, 1)] for name in VIT_DATASETS},
}
# WebNLG test subsets: U = unseen categories, S = seen, A = all (the papers' column order).
WEBNLG_PARTS = ("U", "S", "A")
MISSING = "—"
_NUMBER = re.compile(r"^\s*([A-Za-z][A-Za-z_\-]*)\s*[:=]\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$")
_TRAINABLE = re.compile(r"trainable parameters: ([\d,]+)")


def parse_scores(text: str, source: str) -> dict[str, float]:
    """Scores from a scorer's output: a JSON object (numbers at top level or under ``"scores"``)
    or ``NAME: value`` / ``NAME = value`` lines. Names are upper-cased except CIDEr."""
    text = text.strip()
    found: dict[str, float] = {}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        data = data.get("scores", data)
        found = {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    elif data is None:
        for line in text.splitlines():
            match = _NUMBER.match(line)
            if match:
                found[match.group(1)] = float(match.group(2))
    if not found:
        fail(f"{source}: no scores found (expected JSON or 'NAME: value' lines); see the scorer's log")
    return {_metric_name(k): v for k, v in found.items()}


def scores_from_files(dataset: str, specs: list[str]) -> dict[str, float]:
    """Read the scorer outputs of one run. E2E and DART: one file. WebNLG: ``U=file S=file A=file``
    (unseen, seen, all categories), whose metrics become ``BLEU_U``, ``METEOR_S``, ...."""
    if dataset != "webnlg":
        if len(specs) != 1 or "=" in specs[0]:
            fail(f"--scores: {dataset} takes one scorer output file, got {specs}")
        return parse_scores(_read(Path(specs[0])), specs[0])
    parts = dict(spec.split("=", 1) for spec in specs if "=" in spec)
    if len(specs) != len(WEBNLG_PARTS) or set(parts) != set(WEBNLG_PARTS):
        fail(f"--scores: webnlg takes U=FILE S=FILE A=FILE, got {specs}")
    scores = {}
    for part, file in parts.items():
        for key, value in parse_scores(_read(Path(file)), file).items():
            scores[f"{key}_{part}"] = value
    return scores


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: cannot read the scorer output ({exc.strerror})")


def _metric_name(name: str) -> str:
    upper = name.upper().replace("-", "_")
    return "CIDEr" if upper == "CIDER" else upper


def trainable_params(checkpoint: Path, train_log: Path | None) -> int | None:
    """Trainable parameters of a run: the adapter tensors in its checkpoint, or else the
    ``trainable parameters: N`` line of its training log."""
    from nola.gpt2.checkpoint import adapter_tensors, is_adapter, read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    if is_adapter(ckpt):
        return sum(t.numel() for t in adapter_tensors(ckpt).values())
    if train_log is not None and train_log.is_file():
        match = _TRAINABLE.search(train_log.read_text(encoding="utf-8", errors="replace"))
        if match:
            return int(match.group(1).replace(",", ""))
    return None


def git_commit(repo: Path) -> str | None:
    """``HEAD``'s hash, with ``+dirty`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def make_row(name: str, model: str, dataset: str, checkpoint: Path, scores: dict[str, float],
             commands: list[str], nproc: int, repo: Path, train_log: Path | None = None) -> dict:
    """The JSON row of one finished run (``checkpoint``: its adapter folder, or a file)."""
    from nola.gpt2.checkpoint import saved_bytes

    if dataset not in DATASETS:
        fail(f"--dataset {dataset!r}: not one of {', '.join(DATASETS)}")
    return {
        "name": name,
        "model": model,
        "dataset": dataset,
        "params": trainable_params(checkpoint, train_log),
        "adapter_bytes": saved_bytes(checkpoint),
        "checkpoint": str(checkpoint),
        "scores": scores,
        "nproc": nproc,
        "git_commit": git_commit(repo),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commands": commands,
    }


def append_row(path: Path, row: dict) -> None:
    """Append ``row`` as one line with a single ``write`` on an O_APPEND descriptor, so concurrent
    runs never interleave and a crash never leaves half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, line)
    finally:
        os.close(fd)
    if written != len(line):
        fail(f"{path}: short write ({written} of {len(line)} bytes)")


def load_rows(results_dir: Path) -> list[dict]:
    """Every row of ``results_dir/<dataset>.jsonl``, in file order."""
    rows = []
    for dataset in DATASETS:
        path = results_dir / f"{dataset}.jsonl"
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                fail(f"{path}:{number}: not JSON ({exc}); remove or repair that line")
            if not isinstance(row, dict) or "name" not in row or "scores" not in row:
                fail(f"{path}:{number}: a row needs 'name' and 'scores'")
            row.setdefault("dataset", dataset)
            rows.append(row)
    return rows


def load_published(path: Path) -> dict:
    """``published.json``, checked: every row has an id, dataset and method; every published
    entry names a source (URL and table) and uses only the dataset's metric keys."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{path}: cannot read ({exc.strerror})")
    except ValueError as exc:
        fail(f"{path}: not JSON ({exc})")
    ids = set()
    for index, row in enumerate(data.get("rows", [])):
        where = f"{path}: rows[{index}]"
        for key in ("id", "dataset", "model", "method"):
            if not row.get(key):
                fail(f"{where}: missing {key!r}")
        if row["id"] in ids:
            fail(f"{where}: duplicate id {row['id']!r}")
        ids.add(row["id"])
        if row["dataset"] not in DATASETS:
            fail(f"{where}: dataset {row['dataset']!r} is not one of {', '.join(DATASETS)}")
        entry = row.get("published")
        if entry is None:
            continue
        source = entry.get("source") or {}
        if not source.get("url") or not source.get("table"):
            fail(f"{where}: a published entry needs source.url and source.table")
        known = {key for key, _, _ in METRICS[row["dataset"]]}
        unknown = set(entry.get("scores", {})) - known
        if unknown:
            fail(f"{where}: unknown metric(s) {sorted(unknown)} for {row['dataset']} (use {sorted(known)})")
    return data


def _fmt(value: float | None, places: int) -> str:
    return MISSING if value is None else f"{value:.{places}f}"


def _fmt_published(value: float | None, places: int) -> str:
    """A published number with at least ``places`` decimals and never fewer than it was given with."""
    if value is None:
        return MISSING
    given = repr(float(value)).partition(".")[2]
    return f"{value:.{max(places, len(given) if given.isdigit() else 0)}f}"


def _params(count: int | None) -> str:
    return MISSING if count is None else f"{count / 1e6:.3f}M"


def render_table(published: dict, rows: list[dict]) -> str:
    """Markdown: one table per dataset, one line per paper row (then any other measured rows);
    each cell is ``ours / published``, ``—`` where a side has no number. The latest run of a row wins."""
    latest: dict[str, dict] = {}
    for row in rows:
        latest[row["name"]] = row
    paper_rows = published.get("rows", [])
    out = ["Each cell: ours / published (— = not run yet, or no published number). Sources below the tables.", ""]
    notes: list[str] = []
    for dataset in DATASETS:
        listed = [r for r in paper_rows if r["dataset"] == dataset]
        extra = [r for r in latest.values() if r.get("dataset") == dataset
                 and r["name"] not in {p["id"] for p in listed}]
        if not listed and not extra:
            continue
        metrics = METRICS[dataset]
        out.append(f"### {dataset.upper() if dataset != 'webnlg' else 'WebNLG'}")
        out.append("")
        out.append("| row | model | method | params | adapter bytes | "
                   + " | ".join(key.replace("_", "-") for key, _, _ in metrics) + " |")
        out.append("|" + " --- |" * (5 + len(metrics)))
        for paper in listed + [{"id": r["name"], "model": r.get("model", ""), "method": "(not a paper row)"}
                               for r in extra]:
            ours = latest.get(paper["id"])
            entry = paper.get("published") or {}
            scores = ours.get("scores", {}) if ours else {}
            cells = [paper["id"], paper["model"], paper["method"],
                     f"{_params(ours.get('params')) if ours else MISSING} / {entry.get('params', MISSING)}",
                     str(ours["adapter_bytes"]) if ours and ours.get("adapter_bytes") is not None else MISSING]
            for key, factor, places in metrics:
                mine = scores.get(key)
                theirs = entry.get("scores", {}).get(key)
                cells.append(f"{_fmt(None if mine is None else mine * factor, places)} / {_fmt_published(theirs, places)}")
            out.append("| " + " | ".join(cells) + " |")
            if entry:
                source = entry["source"]
                notes.append(f"- `{paper['id']}`: {source['table']}, {source['url']}"
                             + (f" ({source['note']})" if source.get("note") else ""))
        out.append("")
    if notes:
        out += ["Published numbers:", ""] + notes + [""]
    return "\n".join(out)
