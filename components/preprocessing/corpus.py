"""Reading corpora at scale: files are cut into byte ranges, each range is read by one worker, and a
document belongs to the range that holds its first byte, so a document never straddles two ranges and
every document is read exactly once, whatever the number of ranges or workers.

Formats: ``text`` (Google's: one sentence per line, a blank line between documents) and ``jsonl`` (one document
per line, a ``text`` field, split into sentences by :func:`split_sentences`). Compressed files (gzip, bz2, xz)
cannot be sought and are one range, streamed: memory is bounded by the read chunk and ``max_line_bytes``,
whatever the file's size; a truncated or corrupt stream is noticed (Python's decompressors check the end
marker and checksums) and dead-lettered by name. A file whose head holds NUL bytes or a high share of
invalid UTF-8 is not text and is dead-lettered whole. Problems never stop the pipeline: they become dead
letters (file, line number, byte offset of the line, reason) and counters. Line numbers are counted lazily,
only for files that have dead letters, by one forward pass over the file up to the last letter.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import json
import lzma
import re
import zlib
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from trainer.text.base import decode_utf8

NAMESPACE = "bertkeras"
READ_CHUNK = 256 << 10
SNIFF_BYTES = 64 << 10
MIN_SNIFF_BYTES = 1 << 10
# Dead-letter reasons that name a whole file.
UNREADABLE_FILE = "unreadable file"
CORRUPT_FILE = "truncated or corrupt compressed file"
NOT_TEXT = "not a text file"
# Compressions read with Python's own decompressors, which raise on a truncated or corrupt stream (Beam's
# readers return what they could decompress and stop quietly).
_DECOMPRESSORS = {
    CompressionTypes.GZIP: lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    CompressionTypes.BZIP2: lambda raw: bz2.BZ2File(raw, mode="rb"),
    CompressionTypes.LZMA: lambda raw: lzma.LZMAFile(raw, mode="rb"),
}


def open_input(path: str):
    """A binary file object over the (decompressed) contents of a local or remote file. Gzip, bz2 and xz use
    Python's decompressors so that a truncated file raises (EOFError) instead of ending early."""
    compression = CompressionTypes.detect_compression_type(path)
    if compression in _DECOMPRESSORS:
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        return _DECOMPRESSORS[compression](raw)
    return FileSystems.open(path, compression_type=CompressionTypes.AUTO)


def is_compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


def is_corrupt_stream(path: str, err: BaseException) -> bool:
    """Whether ``err`` says a compressed file's data is damaged (truncated, bad header or checksum), as opposed
    to a failure to reach it: bz2 reports damage as a plain OSError; connection errors are OSError subclasses."""
    damage = (EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)
    return is_compressed(path) and (isinstance(err, damage) or type(err) is OSError)


def not_text_reason(head: bytes, max_invalid_share: float) -> str | None:
    """Why the first bytes of a file say it is not UTF-8 text, or None when it reads as text: more than
    ``max_invalid_share`` of its bytes are NULs or start invalid UTF-8 sequences (a binary file, UTF-16; a
    Latin-1 text has a few, each repaired and counted line by line)."""
    if not head:
        return None
    nul = head.count(b"\0")
    invalid = head.decode("utf-8", "replace").count("\ufffd") - head.count("\ufffd".encode())
    if len(head) < MIN_SNIFF_BYTES:  # too little text for a share: a short Latin-1 file is repaired line by line
        invalid = 0
    if nul + invalid > max_invalid_share * len(head):
        return (f"{NOT_TEXT}: {nul} NUL bytes and {invalid} invalid UTF-8 sequences in its first {len(head)} bytes "
                f"(over {max_invalid_share:.0%}; max_invalid_share)")
    return None


def read_head(path: str) -> bytes:
    with open_input(path) as handle:
        return handle.read(SNIFF_BYTES)


def bounded_lines(handle, limit: int, chunk: int = READ_CHUNK) -> Iterator[tuple[bytes, int]]:
    """(line without its newline, the line's full length in bytes) for each line from the handle's position.
    A line longer than ``limit`` is cut to ``limit + 1`` bytes (enough to know it is too long), so memory stays
    bounded by ``chunk + limit`` whatever the file holds."""
    pending: list[bytes] = []
    pending_length = 0
    read = getattr(handle, "read1", handle.read)  # decompressors: what one input read gives, so a truncated
    while data := read(chunk):                    # stream loses only its last piece
        lines = data.split(b"\n")
        for line in lines[:-1]:
            if pending:
                yield b"".join(pending)[: limit + 1] + (b"" if pending_length > limit else line[: limit + 1 - pending_length]), pending_length + len(line)
                pending, pending_length = [], 0
            else:
                yield line[: limit + 1], len(line)
        tail = lines[-1]
        if pending_length <= limit:
            pending.append(tail[: limit + 1 - pending_length])
        pending_length += len(tail)
    if pending_length:
        yield b"".join(pending), pending_length
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
    """The file's full path and the document's byte offset, hashed: two files of the same name in different
    folders are different documents with their own random choices."""
    return hashlib.sha1(f"{path}\0{offset}".encode()).hexdigest()


class SplitIntoRanges(beam.DoFn):
    """File metadata -> byte ranges of about ``range_bytes`` (one range for compressed files)."""

    def __init__(self, range_bytes: int):
        self.range_bytes = range_bytes

    def process(self, metadata) -> Iterator[FileRange]:
        path, size = metadata.path, metadata.size_in_bytes
        if is_compressed(path) or size <= self.range_bytes:
            yield FileRange(path, 0, -1)
            return
        for start in range(0, size, self.range_bytes):
            yield FileRange(path, start, min(start + self.range_bytes, size))


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

    def __init__(self, input_format: str, max_line_bytes: int, count: bool = True, batch_size: int = 256,
                 max_invalid_share: float = 0.05):
        self.input_format = input_format
        self.max_line_bytes = max_line_bytes
        self.max_invalid_share = max_invalid_share
        self.count = count  # the second read (the negative pool) must not count documents twice
        self.batch_size = batch_size
        prefix = "" if count else "pool_"
        self.documents = Metrics.counter(NAMESPACE, prefix + "documents")
        self.empty = Metrics.counter(NAMESPACE, prefix + "empty_documents")
        self.dead = Metrics.counter(NAMESPACE, prefix + "dead_letters")
        self.invalid_utf8 = Metrics.counter(NAMESPACE, prefix + "invalid_utf8_lines")
        self.too_long = Metrics.counter(NAMESPACE, prefix + "lines_too_long")
        self.unreadable = Metrics.counter(NAMESPACE, prefix + "unreadable_files")
        self.corrupt = Metrics.counter(NAMESPACE, prefix + "corrupt_files")
        self.not_text = Metrics.counter(NAMESPACE, prefix + "not_text_files")

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
        path, start = file_range.path, file_range.start
        try:
            handle = open_input(path)
        except Exception as err:  # noqa: BLE001 - any failure to open is reported, not fatal
            self.unreadable.inc()
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(path, start, f"{UNREADABLE_FILE}: {err}"))
            return
        emitted = 0
        try:
            with handle:
                reason = not_text_reason(read_head(path), self.max_invalid_share)
                if reason:  # every range of the file skips it; the first range reports it
                    if start == 0:
                        self.not_text.inc()
                        self.dead.inc()
                        yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(path, 0, reason))
                    return
                for item in self._read(handle, file_range):
                    emitted += isinstance(item, Document)
                    yield item
        except Exception as err:
            if not is_corrupt_stream(path, err):
                raise  # e.g. a network error: Beam retries the range, and a lasting failure fails the run
            self.corrupt.inc()
            self.dead.inc()
            kept = f"; the {emitted} documents before the damage were kept" if emitted else ""
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(path, start, f"{CORRUPT_FILE}: {err}{kept}"))

    def _align(self, handle, start: int) -> int:
        """Moves to the first line start >= ``start``; returns its offset (reading in chunks: a line may be
        as long as the file)."""
        if start == 0:
            return 0
        position = start - 1
        handle.seek(position)
        while chunk := handle.read(READ_CHUNK):
            newline = chunk.find(b"\n")
            if newline >= 0:
                position += newline + 1
                break
            position += len(chunk)
        handle.seek(position)
        return position

    def _decode(self, path: str, offset: int, raw: bytes, length: int):
        """-> (text or None, dead letter or None); ``length`` is the line's full length (``raw`` may be cut)."""
        if length > self.max_line_bytes:
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

    def _owned_lines(self, handle, start: int, end: int) -> Iterator[tuple[int, bytes, int]]:
        """(offset, line, full length) of the lines that start in [start, end) (all lines when end is -1), then
        of the lines after ``end`` that finish the document in progress (up to a blank line)."""
        offset = start
        previous_blank = True
        for raw, length in bounded_lines(handle, self.max_line_bytes):
            blank = not raw.strip()
            if end != -1 and offset >= end and (self.input_format == "jsonl" or previous_blank or blank):
                return
            yield offset, raw, length
            offset += length + 1
            previous_blank = blank

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
        max_bytes = self.max_line_bytes
        for line_offset, raw, length in self._owned_lines(handle, start, end):
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
            if length <= max_bytes:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            if text is None:  # too long or invalid UTF-8: a dead letter, and the repaired text if there is one
                text, letter = self._decode(path, line_offset, raw, length)
                self.dead.inc()
                yield beam.pvalue.TaggedOutput(self.DEAD, letter)
            text = text.strip() if text is not None else ""
            if text:
                lines.append(text)
                offsets.append(line_offset)
        if lines:
            yield from self._emit(path, first, lines, offsets)

    def _read_jsonl(self, handle, path: str, start: int, end: int):
        for offset, raw, length in self._owned_lines(handle, start, end):
            if not raw.strip():
                continue
            text, letter = self._decode(path, offset, raw, length)
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
