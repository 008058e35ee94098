"""``python -m lopt.cli``: the same as the ``lopt`` command."""

import sys

from lopt.cli import main

sys.exit(main())
