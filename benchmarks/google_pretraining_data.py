"""Runs Google's `create_pretraining_data.py` (BERT's reference implementation, written for TensorFlow 1)
unmodified under TensorFlow 2, for side-by-side benchmarks: the script's and its `tokenization.py`'s
`import tensorflow` get `tf.compat.v1`, which keeps the TF1 names they use (tf.flags, tf.gfile, tf.logging,
tf.app, tf.python_io, tf.train.Example). The anchor folder is not part of this project (see bench_preprocess.py).

    .venv/bin/python benchmarks/google_pretraining_data.py ANCHOR_DIR --input_file=... --output_file=... \
        --vocab_file=... [the script's own flags]
"""

from __future__ import annotations

import os
import runpy
import sys


def main() -> None:
    if len(sys.argv) < 2 or not os.path.isfile(os.path.join(sys.argv[1], "create_pretraining_data.py")):
        sys.exit("usage: google_pretraining_data.py ANCHOR_DIR [flags]: ANCHOR_DIR must hold Google's "
                 "create_pretraining_data.py and tokenization.py")
    anchor = os.path.abspath(sys.argv.pop(1))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf  # noqa: PLC0415

    sys.modules["tensorflow"] = tf.compat.v1
    sys.path.insert(0, anchor)
    sys.argv[0] = os.path.join(anchor, "create_pretraining_data.py")
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
