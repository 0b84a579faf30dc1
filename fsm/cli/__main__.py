"""``python -m fsm.cli``: the same as the ``fsm`` console script."""

import sys

from fsm.cli import main

sys.exit(main())
