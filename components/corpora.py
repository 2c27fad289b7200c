"""Offline real-text corpora turned into Google's pretraining format (a sentence a line, a blank line between
documents): Debian's King James Bible (package ``bible-kjv``), one verse a line, one chapter a document."""

from __future__ import annotations

import random
import re
import shutil
import subprocess

from trainer import fileio

_REFERENCE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+)$")


def kjv_chapters() -> list[tuple[str, list[str]]]:
    """[(book+chapter, verses)] in canonical order; whitespace collapsed, references dropped."""
    bible = shutil.which("bible")
    if bible is None:
        raise RuntimeError("the `bible` command is missing: install Debian's bible-kjv and bible-kjv-text (make setup)")
    out = subprocess.run([bible, "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    chapters: list[tuple[str, list[str]]] = []
    for line in out.splitlines():
        reference, _, text = line.partition(" ")
        match = _REFERENCE.match(reference)
        if not match or not text.strip():
            continue
        chapter = match.group(1) + match.group(2)
        if not chapters or chapters[-1][0] != chapter:
            chapters.append((chapter, []))
        chapters[-1][1].append(" ".join(text.split()))
    return chapters


def write_kjv_corpus(path: str, copies: int = 1, seed: int = 0) -> dict:
    """Writes the KJV in Google's format; copies > 1 appends copies with the chapters shuffled."""
    chapters = kjv_chapters()
    rng = random.Random(seed)
    blocks = []
    for copy in range(copies):
        order = list(chapters)
        if copy:
            rng.shuffle(order)
        blocks.extend("\n".join(verses) for _, verses in order)
    text = "\n\n".join(blocks) + "\n"
    fileio.atomic_write_text(path, text)
    return {"documents": len(blocks), "lines": sum(len(v) for _, v in chapters) * copies, "bytes": len(text.encode())}
