"""``fsm prune --db URL --older-than 30d``: forget old history (log rows, kept outcomes).

`Store.prune` decides what goes and deletes it in short batches, so a running worker's
drives commit between them. An outcome pruned no longer recognises a start delivered again
for its id (`Executor.redelivery_window`, 7 days by default): keep at least that long.
"""

from __future__ import annotations

import argparse

from fsm.cli.actions import render
from fsm.cli.common import Command, duration, open_db


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", required=True, help="the database to prune")
    p.add_argument(
        "--older-than",
        type=duration,
        required=True,
        metavar="DURATION",
        help="delete history older than this: 30d, 12h, 90m, 45s, 2w",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    store = open_db(args.db, readonly=False)
    try:
        result = store.prune(store.now() - args.older_than)
    finally:
        store.close()
    if args.json:
        render.write_json(
            {
                "log_rows": result.log_rows,
                "outcomes": result.outcomes,
                "events": result.events,
                "older_than": result.older_than,
            }
        )
    else:
        render.console().print(
            f"pruned {render.plural(result.log_rows, 'log row')}, "
            f"{render.plural(result.outcomes, 'outcome')} and "
            f"{render.plural(result.events, 'taken event')} older than "
            f"{render.absolute(result.older_than)}"
        )
    return 0


COMMAND = Command("delete history (log rows, kept outcomes) older than a duration", configure, run)
