"""Cleaning one document's text: Unicode normalization, control characters, whitespace.

Pure functions of the text (no state), so they run in the tokenizer worker processes.
NUL is always removed: the `bytes` tokenizer uses byte 0 to mark the end of a document.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

NORMALIZATIONS = ("NFC", "NFKC", "none")
# C0 controls and DEL except tab and newline; carriage returns are handled as line ends.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class CleanOptions:
    normalize: str = "NFC"
    """Unicode normalization form: NFC (canonical, keeps meaning), NFKC (folds compatibility
    characters such as ligatures and full-width forms), or none."""
    strip_control: bool = True
    """Remove control characters other than tab and newline."""
    normalize_whitespace: bool = True
    """CRLF/CR to LF, no trailing spaces on a line, at most one blank line in a row,
    no leading or trailing blank space in the document."""
    min_chars: int = 1
    """Drop documents shorter than this many characters after cleaning."""
    dedup: bool = True
    """Drop exact duplicates (same text after cleaning), keeping the first."""


def clean_text(text: str, opts: CleanOptions) -> str:
    if opts.normalize != "none":
        text = unicodedata.normalize(opts.normalize, text)
    if opts.strip_control:
        text = _CONTROL.sub("", text)
    elif "\x00" in text:
        text = text.replace("\x00", "")
    if opts.normalize_whitespace:
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        # Cheap substring checks first: most documents need neither regex.
        if " \n" in text or "\t\n" in text or text.endswith((" ", "\t")):
            text = _TRAILING_SPACE.sub("", text)
        if "\n\n\n" in text:
            text = _BLANK_LINES.sub("\n\n", text)
        text = text.strip()
    return text
