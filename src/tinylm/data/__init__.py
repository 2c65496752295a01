"""Data: sources -> prepare -> token files + manifest -> loader."""
