"""NOLA: LoRA compressed as linear combinations of seeded random bases, for GPT-2."""

__version__ = "0.1.0"
