"""The sandmle entry point: `sandmle --config=configs/x.py[:arg] --workdir=DIR`.

Also `python -m sandmle.main ...`. Parses the flags (config_lib), then runs the job
that `config.job` names (sandmle.jobs). Overrides: `--config.a.b=value`.
"""

from __future__ import annotations

import sys

from absl import app, flags

from sandmle import config_lib, jobs

FLAGS = flags.FLAGS
config_lib.define_flags(FLAGS)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.config is None:
        raise app.UsageError("--config=configs/<name>.py[:arg] is required")
    config_lib.quiet_library_logs()
    try:
        jobs.run(FLAGS.config, FLAGS.workdir, multihost=FLAGS.multihost)
    except jobs.UnknownJobError as e:
        print(f"sandmle: {e}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """Console script `sandmle`."""
    app.run(main, flags_parser=config_lib.parse_flags)


if __name__ == "__main__":
    run()
