"""Files named by metadata (a dataset manifest, a weight index) stay inside their directory.

A manifest.json or model.safetensors.index.json is data a user may have been sent; a
name like "../../etc/hostname" or "/etc/passwd" in it must not make tinylm read there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinylm.errors import TinyLMError


def confined(base: Path, name: Any, origin: str) -> Path:
    """base / name, refused unless name is a relative path that stays inside base (after
    resolving `..` and symlinks)."""
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise TinyLMError(
            f"{origin}: file {name!r} is not a path relative to {base}; the metadata is "
            "damaged (write it again with tinylm)"
        )
    path = base / name
    if not path.resolve().is_relative_to(base.resolve()):
        raise TinyLMError(
            f"{origin}: file {name!r} lies outside {base}; refusing to read it (the metadata "
            "is damaged or not to be trusted)"
        )
    return path
