"""tinylm: train small GPT-style language models from scratch, end to end."""

__version__ = "0.1.0"
