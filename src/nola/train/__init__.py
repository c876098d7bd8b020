"""The infrastructure the reproductions stand on: the one training loop (``trainer``, whose tasks are
GPT-2's ``nola.gpt2.train``, the causal LM's ``nola.causal.llama_train`` and ViT's ``nola.vit.train``),
optimiser and schedules, processes and ranks, faults, the run folder, ``resume.pt``, flags, the cache,
downloads and pre-trained LMs, text and data-file readers. It imports only the generic library (the top
of ``nola``)."""
