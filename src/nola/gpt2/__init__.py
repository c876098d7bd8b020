"""The GPT-2 reproduction (``src/gpt2_*.py``): the forked model, its cards, checkpoints, data, loop,
beam steps, decoding and export. Imports the library, ``nola.train`` and ``nola.decoding``; never
``nola.causal``."""
