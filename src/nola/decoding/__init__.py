"""Decoding shared by the GPT-2 and causal-LM reproductions: microsoft/LoRA's beam rule (``beam``)
and the scorers' reference/prediction files (``decode``). Imports only the library and ``nola.train``."""
