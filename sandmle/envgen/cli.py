"""`sandmle-envgen`: generate verified synthetic tasks.

    sandmle-envgen --config=configs/envgen.py --workdir=/tmp/envgen

Rerunning into the same --workdir resumes the run (see docs/envgen.md).
"""

from absl import flags
from ml_collections import config_flags

from sandmle.envgen.pipeline import run_envgen
from sandmle.tasks.import_cli import app_run

config_flags.DEFINE_config_file("config", None, "configs/envgen.py[:args]", lock_config=True)
flags.DEFINE_string("workdir", None, "where tasks/, manifest.jsonl and split.json go")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    run_envgen(flags.FLAGS.config, flags.FLAGS.workdir)


def run():
    """Console-script entry point (bad settings, a refused workdir or a failing LLM endpoint
    end with one line and a non-zero status; Ctrl-C prints the summary so far)."""
    app_run(main)


if __name__ == "__main__":
    run()
