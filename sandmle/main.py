"""sandmle: run the job a config names, in a workdir that keeps everything of the run.

  sandmle --workdir=/tmp/sandmle    # the main job: configs/tiny_cpu.py (train an agent on CPU)
  sandmle --config=configs/regression.py:runlocal --workdir=/tmp/reg
  sandmle --config=configs/regression.py --workdir=/tmp/reg --config.optim.lr=1e-3
  sandmle --config=/tmp/reg/config.py --workdir=/tmp/reg --config.steps=4000  # resume, longer

Also `python -m sandmle.main ...`. `--config.a.b=value` overrides any config field.
Rerunning with the same workdir resumes from the newest checkpoint; fields the config
does not list in `resume_safe_fields` may not change. SIGTERM or Ctrl-C saves at the
next step and exits 0. Bad input exits 2 with one line saying what is wrong.
"""

from __future__ import annotations

import os

from absl import flags

from sandmle import cli, config_lib, jobs
from sandmle.errors import UserError

FLAGS = flags.FLAGS
config_lib.define_flags(FLAGS)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    config_lib.quiet_library_logs()
    jobs.run(FLAGS.config, FLAGS.workdir, multihost=FLAGS.multihost)


DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "tiny_cpu.py")


def _parse(argv: list[str]) -> list[str]:
    """Flags, with `configs/tiny_cpu.py` (the main job) when no --config is given."""
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = [argv[0], f"--config={DEFAULT_CONFIG}", *argv[1:]]
    return config_lib.parse_flags(argv)


def run() -> None:
    """Console script `sandmle`."""
    cli.run_app(main, prog="sandmle", doc=__doc__, flags_parser=_parse)


if __name__ == "__main__":
    run()
