"""``python -m fewstep.cli`` (and ``torchrun -m fewstep.cli``)."""

from fewstep.cli import main

raise SystemExit(main())
