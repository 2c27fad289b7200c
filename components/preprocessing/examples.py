"""Records in batches: a Beam TFRecord sink whose elements are lists of records (serialized by
:mod:`trainer.records`), so Beam handles one element per batch rather than one per record, and the TFRecord
framing checked and counted in plain Python."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import apache_beam as beam
import google_crc32c
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes



def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord_frame(record: bytes) -> bytes:
    """One record in the TFRecord framing: length, masked CRC-32C of the length, data, masked CRC-32C."""
    length = struct.pack("<Q", len(record))
    return b"".join((length, _masked_crc(length), record, _masked_crc(record)))


def count_tfrecords(handle, name: str) -> int:
    """Records in a TFRecord stream, each frame's length and data checked against their CRC-32C; a file cut
    short or corrupted raises a ValueError naming ``name``. Plain Python over any file object (local, gs://
    through Beam's FileSystems), so counting what a run wrote needs no TensorFlow file system."""
    count = 0
    while header := handle.read(12):
        if len(header) < 12 or _masked_crc(header[:8]) != header[8:]:
            raise ValueError(f"{name}: record {count} has a corrupt or truncated header")
        length = struct.unpack("<Q", header[:8])[0]
        data = handle.read(length)
        footer = handle.read(4)
        if len(data) < length or _masked_crc(data) != footer:
            raise ValueError(f"{name}: record {count} is corrupt or truncated")
        count += 1
    return count


class _RecordBatchSink(filebasedsink.FileBasedSink):
    """TFRecord files from elements that are lists of serialized records. ``FileBasedSink`` gives the
    temp-file + rename finalisation and every Beam filesystem (local, gs://)."""

    def write_record(self, file_handle, value: Sequence[bytes]) -> None:
        file_handle.write(b"".join(tfrecord_frame(record) for record in value))


class WriteRecordBatches(beam.PTransform):
    """Lists of serialized records -> ``<prefix>-SSSSS-of-NNNNN<suffix>`` TFRecord shards (gzip optional)."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str = "", num_shards: int = 0, gzip: bool = False):
        super().__init__()
        self.num_shards = num_shards
        self.sink = _RecordBatchSink(
            file_path_prefix, coder=None, file_name_suffix=file_name_suffix, num_shards=num_shards,
            compression_type=CompressionTypes.GZIP if gzip else CompressionTypes.UNCOMPRESSED,
        )

    def expand(self, pcoll):
        if self.num_shards > 0:
            # Beam deals elements to a fixed number of shards in turn: cut each batch into that many parts,
            # so a few large batches still fill every shard.
            count = self.num_shards
            pcoll = pcoll | "Deal" >> beam.FlatMap(lambda records: [part for i in range(count) if (part := records[i::count])])
        return pcoll | beam.io.Write(self.sink)
