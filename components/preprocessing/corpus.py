"""Reading corpora at scale: files are cut into byte ranges, each range is read by one worker, and a
document belongs to the range that holds its first byte, so a document never straddles two ranges and
every document is read exactly once, whatever the number of ranges or workers.

Formats: ``text`` (Google's: one sentence per line, a blank line between documents) and ``jsonl`` (one document
per line, a ``text`` field, split into sentences by :func:`split_sentences`). Compressed files (gzip, bz2...)
cannot be sought and are read whole. Problems never stop the pipeline: they become dead letters
(file, line number, byte offset of the line, reason) and counters. Line numbers are counted lazily, only for
files that have dead letters, by one forward pass over the file up to the last letter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from trainer.text.base import decode_utf8

NAMESPACE = "bertkeras"
# A sentence ends at ".", "!" or "?" (optionally followed by closing quotes/brackets) and whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """The documented rule for JSONL documents: newlines end sentences, and so do ".", "!" or "?" (with
    any closing quotes or brackets) followed by whitespace."""
    sentences = []
    for paragraph in text.splitlines():
        start = 0
        for match in _SENTENCE_END.finditer(paragraph):
            sentences.append(paragraph[start : match.start()] + paragraph[match.start() : match.end()].rstrip())
            start = match.end()
        sentences.append(paragraph[start:])
    return [s.strip() for s in sentences if s.strip()]


@dataclasses.dataclass(frozen=True)
class FileRange:
    path: str
    start: int
    end: int  # exclusive; -1 = to the end of the file


@dataclasses.dataclass(frozen=True)
class Document:
    key: str  # stable identity: file name and byte offset; seeds the document's random choices
    path: str
    offset: int
    lines: tuple[str, ...]
    line_offsets: tuple[int, ...] = ()  # byte offset of each line in the file (for dead letters)


def dead_letter(path: str, offset: int | None, reason: str, sample: str = "", line: int | None = None) -> str:
    record = {"file": path, "line": line, "byte_offset": offset, "reason": reason, "sample": sample[:200]}
    return json.dumps(record, ensure_ascii=False)


class LineNumbers:
    """1-based line numbers of byte offsets in one file, counted forward from the last offset asked about."""

    def __init__(self, path: str):
        self.path = path
        self.position = 0
        self.lines = 1

    def at(self, offset: int) -> int:
        if offset < self.position:
            self.position, self.lines = 0, 1
        with FileSystems.open(self.path, compression_type=CompressionTypes.AUTO) as handle:
            if self.position:
                handle.seek(self.position)
            while self.position < offset:
                chunk = handle.read(min(offset - self.position, 1 << 20))
                if not chunk:
                    break
                self.lines += chunk.count(b"\n")
                self.position += len(chunk)
        return self.lines


class LineNumberCache:
    """One :class:`LineNumbers` per file, for a DoFn that reports dead letters."""

    def __init__(self):
        self.files: dict[str, LineNumbers] = {}

    def __call__(self, path: str, offset: int) -> int | None:
        try:
            return self.files.setdefault(path, LineNumbers(path)).at(offset)
        except Exception:  # noqa: BLE001 - a line number is a courtesy; the letter is sent without one
            return None


def document_key(path: str, offset: int) -> str:
    """File name (not folder: the same corpus copied elsewhere keeps its keys) and byte offset, hashed."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return hashlib.sha1(f"{name}\0{offset}".encode()).hexdigest()


class SplitIntoRanges(beam.DoFn):
    """File metadata -> byte ranges of about ``range_bytes`` (one range for compressed files)."""

    def __init__(self, range_bytes: int):
        self.range_bytes = range_bytes

    def process(self, metadata) -> Iterator[FileRange]:
        path, size = metadata.path, metadata.size_in_bytes
        if CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED or size <= self.range_bytes:
            yield FileRange(path, 0, -1)
            return
        for start in range(0, size, self.range_bytes):
            yield FileRange(path, start, min(start + self.range_bytes, size))


class _LineReader:
    """Lines of one range, with their byte offsets; handles seeking and range ownership."""

    def __init__(self, handle, start: int):
        self.handle = handle
        self.position = start

    def lines(self) -> Iterator[tuple[int, bytes]]:
        for raw in iter(self.handle.readline, b""):
            offset = self.position
            self.position += len(raw)
            yield offset, raw


def _previous_line_is_blank(handle, line_start: int) -> bool:
    """Whether the line ending just before ``line_start`` (a line start > 0) is blank."""
    window = min(line_start, 4096)
    handle.seek(line_start - window)
    before = handle.read(window)[:-1]  # drop the newline that ends the previous line
    previous = before[before.rfind(b"\n") + 1 :]
    return not previous.strip()


class ReadDocuments(beam.DoFn):
    """A byte range -> the documents whose first line starts in it, in lists of up to ``batch_size`` (so the
    tokenizer sees large batches). Dead letters go to the tagged output."""

    DEAD = "dead_letters"

    def __init__(self, input_format: str, max_line_bytes: int, count: bool = True, batch_size: int = 256):
        self.input_format = input_format
        self.max_line_bytes = max_line_bytes
        self.count = count  # the second read (the negative pool) must not count documents twice
        self.batch_size = batch_size
        prefix = "" if count else "pool_"
        self.documents = Metrics.counter(NAMESPACE, prefix + "documents")
        self.empty = Metrics.counter(NAMESPACE, prefix + "empty_documents")
        self.dead = Metrics.counter(NAMESPACE, prefix + "dead_letters")
        self.invalid_utf8 = Metrics.counter(NAMESPACE, prefix + "invalid_utf8_lines")
        self.too_long = Metrics.counter(NAMESPACE, prefix + "lines_too_long")
        self.unreadable = Metrics.counter(NAMESPACE, prefix + "unreadable_files")

    def setup(self):
        self.line_of = LineNumberCache()

    def process(self, file_range: FileRange):
        batch: list[Document] = []
        for item in self._documents(file_range):
            if isinstance(item, Document):
                batch.append(item)
                if len(batch) >= self.batch_size:
                    yield batch
                    batch = []
            else:
                yield item
        if batch:
            yield batch

    def _documents(self, file_range: FileRange):
        try:
            handle = FileSystems.open(file_range.path, compression_type=CompressionTypes.AUTO)
        except Exception as err:  # noqa: BLE001 - any failure to open is reported, not fatal
            self.unreadable.inc()
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(file_range.path, file_range.start, f"unreadable file: {err}"))
            return
        try:
            with handle:
                yield from self._read(handle, file_range)
        except Exception as err:  # noqa: BLE001 - e.g. a corrupt gzip stream
            self.unreadable.inc()
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(file_range.path, file_range.start, f"unreadable file: {err}"))

    def _align(self, handle, start: int) -> int:
        """Moves to the first line start >= ``start``; returns its offset."""
        if start == 0:
            return 0
        handle.seek(start - 1)
        skipped = handle.readline()
        return start - 1 + len(skipped)

    def _decode(self, path: str, offset: int, raw: bytes):
        """-> (text or None, dead letter or None)."""
        if len(raw) > self.max_line_bytes:
            self.too_long.inc()
            return None, dead_letter(
                path, offset, f"line longer than {self.max_line_bytes} bytes", raw[:200].decode("utf-8", "replace"),
                self.line_of(path, offset),
            )
        text, invalid = decode_utf8(raw.rstrip(b"\r\n"))
        if invalid:
            self.invalid_utf8.inc()
            return text, dead_letter(
                path, offset, f"{invalid} invalid UTF-8 sequence(s) replaced by U+FFFD", text, self.line_of(path, offset)
            )
        return text, None

    def _range_lines(self, handle, start: int, end: int) -> list[bytes]:
        """The lines that start in [start, end) (all lines when end is -1) read as one block, then the lines
        after ``end`` that finish the document in progress (up to a blank line)."""
        block = handle.read() if end == -1 else handle.read(max(0, end - start))
        if end != -1 and block and not block.endswith(b"\n"):
            block += handle.readline()  # the line that straddles ``end``
        lines = block.split(b"\n")
        if lines[-1] == b"":
            lines.pop()  # the split after the final newline
        if end != -1 and lines and lines[-1].strip():
            for raw in iter(handle.readline, b""):
                if not raw.strip():
                    break
                lines.append(raw.rstrip(b"\n"))
        return lines

    def _read(self, handle, file_range: FileRange):
        path, end = file_range.path, file_range.end
        start = self._align(handle, file_range.start)
        if self.input_format == "jsonl":
            yield from self._read_jsonl(handle, path, start, end)
            return
        # Google's format: is the first line here the start of a document?
        at_document_start = True
        if start > 0:
            at_document_start = _previous_line_is_blank(handle, start)
            handle.seek(start)
        lines: list[str] = []
        offsets: list[int] = []
        first = -1  # offset of the document's first line
        offset = start
        max_bytes = self.max_line_bytes
        for raw in self._range_lines(handle, start, end):
            line_offset, offset = offset, offset + len(raw) + 1
            if not raw.strip():
                at_document_start = True
                if lines:
                    yield from self._emit(path, first, lines, offsets)
                    lines, offsets = [], []
                first = -1
                continue
            if not at_document_start:
                continue  # the tail of a document owned by the previous range
            if first < 0:
                first = line_offset
            text = None
            if len(raw) <= max_bytes:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            if text is None:  # too long or invalid UTF-8: a dead letter, and the repaired text if there is one
                text, letter = self._decode(path, line_offset, raw)
                self.dead.inc()
                yield beam.pvalue.TaggedOutput(self.DEAD, letter)
            text = text.strip() if text is not None else ""
            if text:
                lines.append(text)
                offsets.append(line_offset)
        if lines:
            yield from self._emit(path, first, lines, offsets)

    def _read_jsonl(self, handle, path: str, start: int, end: int):
        for offset, raw in _LineReader(handle, start).lines():
            if end != -1 and offset >= end:
                return
            if not raw.strip():
                continue
            text, letter = self._decode(path, offset, raw)
            if text is None:
                self.dead.inc()
                yield beam.pvalue.TaggedOutput(self.DEAD, letter)
                continue
            try:
                record = json.loads(text)
                body = record["text"]
                if not isinstance(body, str):
                    raise TypeError("the text field is not a string")
            except (ValueError, KeyError, TypeError) as err:
                self.dead.inc()
                yield beam.pvalue.TaggedOutput(
                    self.DEAD,
                    dead_letter(path, offset, f"not a JSON object with a text field: {err}", text, self.line_of(path, offset)),
                )
                continue
            if letter is not None:
                self.dead.inc()
                yield beam.pvalue.TaggedOutput(self.DEAD, letter)
            sentences = split_sentences(body)
            yield from self._emit(path, offset, sentences, [offset] * len(sentences))

    def _emit(self, path: str, offset: int, lines: list[str], offsets: list[int]):
        if not lines:
            self.empty.inc()
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(path, offset, "empty document", line=self.line_of(path, offset)))
            return
        self.documents.inc()
        yield Document(document_key(path, offset), path, offset, tuple(lines), tuple(offsets))
