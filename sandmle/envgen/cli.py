"""sandmle-envgen: generate verified synthetic tasks from the seed library.

  sandmle-envgen --config=configs/envgen.py --workdir=/tmp/envgen
  sandmle-envgen --config=configs/envgen.py:runlocal --workdir=/tmp/envgen \\
      --config.num_candidates=8

Writes tasks/, manifest.jsonl, split.json and summary.json under --workdir; rerunning into
the same --workdir resumes the run (see docs/envgen.md).
`--config.a.b=value` overrides any config field. Bad input exits 2 with one line.
"""

from absl import flags
from ml_collections import config_flags

from sandmle import cli, config_lib, resume
from sandmle.errors import UserError

config_flags.DEFINE_config_file("config", None, "configs/envgen.py[:args]; override fields "
                                "with --config.a.b=value", lock_config=True)
flags.DEFINE_string("workdir", None, "where tasks/, manifest.jsonl and split.json go")


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    if flags.FLAGS.config is None:
        raise UserError("--config=configs/envgen.py[:arg] is required")
    workdir = resume.check_workdir(flags.FLAGS.workdir)
    from sandmle.envgen.pipeline import run_envgen  # heavy: only once the input is good
    run_envgen(flags.FLAGS.config, workdir)


def run():
    """Console-script entry point."""
    cli.run_app(main, prog="sandmle-envgen", doc=__doc__, flags_parser=config_lib.parse_flags)


if __name__ == "__main__":
    run()
