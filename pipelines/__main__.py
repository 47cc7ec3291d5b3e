"""``python -m pipelines``: the ``kfp-finetune`` command line."""

import sys

from pipelines.cli import main

sys.exit(main())
