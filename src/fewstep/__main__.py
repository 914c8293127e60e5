"""``python -m fewstep``: the command line (same as the ``fewstep`` script)."""

import sys

from fewstep.cli import main

sys.exit(main())
