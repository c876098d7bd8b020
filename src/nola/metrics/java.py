"""The two Java tools of the COCO caption code, as shipped by the ``pycocoevalcap`` wheel.

* :func:`ptb_tokenize`: Stanford CoreNLP 3.4.1's PTBTokenizer (``-preserveLines -lowerCase``)
  followed by the removal of pycocoevalcap's punctuation tokens, as its ``PTBTokenizer`` class
  does, but for all sentences in one JVM run and with a line-count check.
* :class:`Meteor`: METEOR 1.5 (``-l en -norm``) in ``-stdio`` mode, with the command line and
  the ``SCORE``/``EVAL`` protocol of pycocoevalcap's ``Meteor`` class; one JVM for a whole corpus.

Both JVMs get ``-Dfile.encoding=UTF-8``, so that how they read and write text does not depend on
the locale.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, NoReturn, Sequence

from pycocoevalcap.meteor import meteor as _coco_meteor
from pycocoevalcap.tokenizer import ptbtokenizer as _coco_ptb

from nola.errors import fail

CORENLP_JAR = Path(_coco_ptb.__file__).resolve().parent / _coco_ptb.STANFORD_CORENLP_3_4_1_JAR
METEOR_JAR = Path(_coco_meteor.__file__).resolve().parent / _coco_meteor.METEOR_JAR
_ENCODING = "-Dfile.encoding=UTF-8"
_PUNCTUATION = frozenset(_coco_ptb.PUNCTUATIONS)


def java() -> str:
    """Path of the ``java`` executable; a one-line error naming the fix when there is none."""
    path = shutil.which("java")
    if path is None:
        fail("java not found: METEOR and the PTB tokenizer need a Java runtime "
             "(e.g. apt-get install default-jre-headless)")
    return path


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """Lower-cased PTB tokens of each sentence, punctuation tokens dropped, joined by spaces."""
    if not sentences:
        return []
    with tempfile.TemporaryDirectory(prefix="nola-ptb-") as tmp:
        path = Path(tmp) / "sentences.txt"
        # one sentence per line: any line break inside a sentence becomes a space
        path.write_text("".join(" ".join(s.splitlines()) + "\n" for s in sentences), encoding="utf-8")
        cmd = [java(), _ENCODING, "-cp", str(CORENLP_JAR), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", str(path)]
        proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(sentences):
        raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {len(sentences)} sentences")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in _PUNCTUATION) for line in lines]


class Meteor:
    """A METEOR 1.5 process scoring in ``-stdio`` mode; use as a context manager.

    The JVM starts (and loads its paraphrase table) as soon as the object is made, so callers
    can create it first and do other work while it loads.
    """

    def __init__(self, language: str = "en") -> None:
        cmd = [java(), _ENCODING, "-jar", "-Xmx2G", str(METEOR_JAR), "-", "-", "-stdio", "-l", language, "-norm"]
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, cwd=METEOR_JAR.parent, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr)

    def __enter__(self) -> "Meteor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _died(self) -> NoReturn:
        self._proc.wait()
        self._stderr.seek(0)
        tail = " | ".join(self._stderr.read().decode(errors="replace").strip().splitlines()[-2:])
        fail(f"METEOR (java) stopped with exit status {self._proc.returncode}: {tail}; it needs "
             f"Java 8+ and 2 GB of free memory")

    def _ask(self, line: str) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write((line + "\n").encode("utf-8"))
            self._proc.stdin.flush()
        except BrokenPipeError:
            self._died()

    def _answer(self) -> str:
        assert self._proc.stdout is not None
        reply = self._proc.stdout.readline()
        if not reply:
            self._died()
        return reply.decode("utf-8").strip()

    def stats(self, hypothesis: str, references: Sequence[str]) -> str:
        """METEOR's sufficient statistics for one segment (pycocoevalcap's ``_stat``)."""
        hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
        self._ask(" ||| ".join(("SCORE", " ||| ".join(references), hypothesis)))
        return self._answer()

    def evaluate(self, stats: Sequence[str]) -> tuple[float, list[float]]:
        """Corpus METEOR from per-segment statistics, and the per-segment scores."""
        self._ask("EVAL" + "".join(f" ||| {s}" for s in stats))
        segments = [float(self._answer()) for _ in stats]
        return float(self._answer()), segments

    def score(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
        """Corpus METEOR of ``hypotheses``, each against its list of references."""
        return self.evaluate([self.stats(h, refs) for h, refs in zip(hypotheses, references)])

    def close(self) -> None:
        """End the JVM."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()  # METEOR exits at the end of its input
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
        self._stderr.close()
