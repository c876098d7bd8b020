"""The causal-LM / LLaMA-2 reproduction (``src/llama_*.py``): loading, Alpaca and data-to-text prompts,
the loss, the loop, decoding, MMLU and PEFT's methods as baselines. Imports the library, ``nola.gpt2.train``
and ``nola.decoding``; never ``nola.gpt2``."""
