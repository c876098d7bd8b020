"""The causal-LM / LLaMA-2 reproduction (``src/llama_*.py``): loading, Alpaca and data-to-text prompts,
the loss, the training task, decoding, MMLU and PEFT's methods as baselines. Imports the library, ``nola.train``
and ``nola.decoding``; never ``nola.gpt2``."""
