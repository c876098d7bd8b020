"""Offline re-implementations of the paper's evaluation scorers.

* :mod:`nola.metrics.e2e`: tuetschek/e2e-metrics ``measure_scores.py`` (BLEU, NIST, METEOR,
  ROUGE-L, CIDEr) for E2E.
* :mod:`nola.metrics.webnlg`: WebNLG/GenerationEval ``eval.py`` (BLEU, BLEU NLTK, METEOR, TER)
  for WebNLG and DART.

The building blocks: :mod:`~nola.metrics.mteval` (mteval-v13a tokenisation, BLEU, NIST,
multi-bleu-detok), :mod:`~nola.metrics.ter` (pyter's TER), :mod:`~nola.metrics.java` (the
Stanford PTB tokenizer and METEOR 1.5 jars shipped by ``pycocoevalcap``); inputs are read with
:mod:`nola.train.textio` (strict UTF-8 with one-line errors), as every text input of the project is.
"""
