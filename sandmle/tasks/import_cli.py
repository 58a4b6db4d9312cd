"""`sandmle-import`: MLE-bench prepared competitions -> sandmle task folders.

    sandmle-import --mlebench ~/.cache/mle-bench/data --out tasks/mlebench
    sandmle-import --mlebench DATA --competitions_dir mle-bench/mlebench/competitions

Prints one line per imported competition. Exit status 0 when every competition was
imported, 2 (one line per problem on stderr) when the input is unusable or some competition
could not be imported; the others are imported all the same, and nothing existing is
replaced without --overwrite.
"""

from __future__ import annotations

import sys

from absl import flags

from sandmle.tasks import mlebench

_SRC = flags.DEFINE_string("mlebench", None, "folder of MLE-bench prepared competitions "
                           "(<id>/prepared/public, <id>/prepared/private/test.csv), or one of them")
_OUT = flags.DEFINE_string("out", "tasks/mlebench", "where the task folders go")
_META = flags.DEFINE_string("competitions_dir", None, "MLE-bench's mlebench/competitions "
                            "folder (leaderboard.csv, description.md, config.yaml per id), "
                            "when they are not inside each competition folder")
_METRIC = flags.DEFINE_string("metric", None, "sandmle metric for every imported "
                              "competition (e.g. log_loss, map_at_k:5); default: from "
                              "config.yaml or the seed library")
_ONLY = flags.DEFINE_list("only", [], "competition ids to import (default: all)")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace existing task folders")


def main(argv: list[str]) -> int:
    """Imports the competitions and prints what happened."""
    if len(argv) > 1:
        print(f"sandmle-import: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 2
    if not _SRC.value:
        print("sandmle-import: --mlebench=DIR is required", file=sys.stderr)
        return 2
    try:
        done, errors = mlebench.import_mlebench(_SRC.value, _OUT.value, _META.value,
                                                _METRIC.value, _ONLY.value, _OVERWRITE.value)
    except mlebench.MLEBenchImportError as e:
        print(f"sandmle-import: {e}", file=sys.stderr)
        return 2
    for result in done:
        print(result.line())
    for line in errors:
        print(f"sandmle-import: {line}", file=sys.stderr)
    return 2 if errors else 0


def run() -> None:
    """Console-script entry point (--help and one-line errors via sandmle.cli)."""
    from sandmle import cli
    cli.run_app(main, prog="sandmle-import", doc=__doc__)


if __name__ == "__main__":
    run()
