"""sandmle: run the job a config names, in a workdir that keeps everything of the run.

  sandmle --config=configs/regression.py:runlocal --workdir=/tmp/reg
  sandmle --config=configs/regression.py --workdir=/tmp/reg --config.optim.lr=1e-3
  sandmle --config=/tmp/reg/config.py --workdir=/tmp/reg --config.steps=4000  # resume, longer

Also `python -m sandmle.main ...`. `--config.a.b=value` overrides any config field.
Rerunning with the same workdir resumes from the newest checkpoint; fields the config
does not list in `resume_safe_fields` may not change. SIGTERM or Ctrl-C saves at the
next step and exits 0. Bad input exits 2 with one line saying what is wrong.
"""

from __future__ import annotations

from absl import flags

from sandmle import cli, config_lib, jobs
from sandmle.errors import UserError

FLAGS = flags.FLAGS
config_lib.define_flags(FLAGS)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.config is None:
        raise UserError("--config=configs/<name>.py[:arg] is required")
    config_lib.quiet_library_logs()
    jobs.run(FLAGS.config, FLAGS.workdir, multihost=FLAGS.multihost)


def run() -> None:
    """Console script `sandmle`."""
    cli.run_app(main, prog="sandmle", doc=__doc__, flags_parser=config_lib.parse_flags)


if __name__ == "__main__":
    run()
