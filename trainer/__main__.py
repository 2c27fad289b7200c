"""``python -m trainer train|evaluate|export``: the trainer container's entry point."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from trainer.training.cli import main  # noqa: E402

sys.exit(main())
