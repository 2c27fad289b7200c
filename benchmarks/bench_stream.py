"""Memory of reading a large gzip corpus: the corpus reader (``ReadDocuments``) streams a compressed file, so
its peak RSS must not grow with the file. A gzip of KJV text repeated to --mib MiB (1 GiB by default,
decompressed; generated once into --workdir) and one of 1/16 of that size are read in fresh processes, every
document counted and dropped; peak RSS is the process's ``ru_maxrss``. For contrast the same files are read
whole into memory (``gzip.open(...).read()``), which is what any reader that is not streaming needs. (The reader
before this benchmark called Beam's ``CompressedFile.read()``, which returns only its first 16 MiB buffer: a
larger compressed file was cut short without a word. Streaming fixed that too.)

    .venv/bin/python benchmarks/bench_stream.py [--mib 1024] [--workdir /tmp/bertkeras-stream]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from components.preprocessing.corpus import Document, FileRange, ReadDocuments
path, mode = sys.argv[1], sys.argv[2]
started = time.time()
documents = lines = 0
if mode == "stream":
    reader = ReadDocuments("text", 1_000_000)
    reader.setup()
    for item in reader.process(FileRange(path, 0, -1)):
        if isinstance(item, list):
            documents += len(item)
            lines += sum(len(d.lines) for d in item)
else:
    import gzip
    data = gzip.open(path).read()
    lines = data.count(b"\n")
    documents = data.count(b"\n\n")
print(json.dumps({{"documents": documents, "lines": lines, "seconds": round(time.time() - started, 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}}))
"""


def make_corpus(path: str, mib: int) -> None:
    if os.path.exists(path):
        return
    sys.path.insert(0, ROOT)
    from components.corpora import kjv_chapters  # noqa: PLC0415

    text = ("\n\n".join("\n".join(verses) for _, verses in kjv_chapters()) + "\n\n").encode()
    copies = max(1, (mib << 20) // len(text))
    with gzip.open(path + ".partial", "wb", compresslevel=1) as out:
        for _ in range(copies):
            out.write(text)
    os.replace(path + ".partial", path)


def measure(path: str, mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT), path, mode],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--workdir", default="/tmp/bertkeras-stream")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    large = os.path.join(args.workdir, f"kjv-{args.mib}mib.txt.gz")
    small = os.path.join(args.workdir, f"kjv-{args.mib // 16}mib.txt.gz")
    started = time.time()
    make_corpus(large, args.mib)
    make_corpus(small, args.mib // 16)
    print(f"corpora ready in {time.time() - started:.0f} s: {large} ({os.path.getsize(large) >> 20} MiB gzip), "
          f"{small} ({os.path.getsize(small) >> 20} MiB gzip)")
    results = {}
    for mode in ("stream", "whole"):
        for label, path in (("small", small), ("large", large)):
            results[f"{mode}/{label}"] = measure(path, mode)
            print(f"{mode:6s} {label:5s} {results[f'{mode}/{label}']}")
    growth = results["stream/large"]["peak_rss_mib"] / results["stream/small"]["peak_rss_mib"]
    print(f"streamed: peak RSS large / small = {growth:.2f}x for 16x the data; "
          f"read whole: {results['whole/large']['peak_rss_mib'] / results['whole/small']['peak_rss_mib']:.2f}x")
    print(json.dumps({"mib": args.mib, "results": results, "stream_peak_ratio": round(growth, 3)}))


if __name__ == "__main__":
    main()
