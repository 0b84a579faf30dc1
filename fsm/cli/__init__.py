"""The ``fsm`` command line: one module per subcommand, `main` in `fsm.cli.app`.

`Command` and `CommandError` are the seam for commands of other packages (``fsm.commands``
entry points); `main` is the console script (``fsm = "fsm.cli:main"``).
"""

from fsm.cli.app import main
from fsm.cli.common import Command, CommandError

__all__ = ["Command", "CommandError", "main"]
