"""sandmle-eval: a policy x a task set x k seeds -> MLE-bench's table (job `evaluate`).

  sandmle-eval --policy=expert --tasks=/tmp/eval_tasks --seeds=3 --workdir=/tmp/ev
  sandmle-eval --policy=checkpoint --path=/tmp/run --tasks=/tmp/run/envgen --workdir=/tmp/ev2
  sandmle-eval --policy=hf --path=/tmp/export --tasks=/tmp/eval_tasks --workdir=/tmp/ev3
  sandmle-eval --policy=openai --path=http://127.0.0.1:8000/v1 --tasks=... --workdir=/tmp/ev4

Per task and overall: valid rate, above median, bronze / silver / gold, any medal, mean
reward and the position score (HumanRank-style), as mean +- SEM over seeds, printed and
written to <workdir>/eval.json and eval.md, with report.html. Rerunning the same command
resumes: finished (task, seed) pairs are not run again. Task sets: envgen workdirs (--split),
folders of tasks, task directories, MLE-bench prepared competitions. `--config` defaults to
configs/eval.py; `--config.a.b=value` sets anything else (agent limits, sampling, farm).
"""

from __future__ import annotations

import os
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from sandmle.errors import UserError

flags.DEFINE_string("policy", None, "expert | checkpoint | hf | openai "
                    "(config.policy.kind; default expert)")
flags.DEFINE_string("path", None, "checkpoint: a train workdir, its checkpoints/ or a step "
                    "folder; hf: a model directory; openai: the base URL")
flags.DEFINE_integer("step", None, "checkpoint step (default: the newest that restores)")
flags.DEFINE_string("tasks", None, "comma-separated task sets: envgen workdirs, folders of "
                    "tasks, task directories, MLE-bench prepared competitions")
flags.DEFINE_string("split", None, "envgen workdirs: validation | train | all")
flags.DEFINE_integer("seeds", None, "trajectories per task, each with its own seed "
                     "(default 3)")
flags.DEFINE_integer("num_tasks", None, "evaluate only the first N tasks (0: all)")
flags.DEFINE_string("workdir", None, "where results, tables and report.html go; rerun "
                    "to resume")
config_flags.DEFINE_config_file("config", None, "configs/eval.py[:args] (the default); "
                                "override fields with --config.a.b=value", lock_config=True)


def default_config_path() -> str:
    import configs
    return os.path.join(os.path.dirname(os.path.abspath(configs.__file__)), "eval.py")


def _parse(argv: list[str]) -> list[str]:
    """config_lib's parser, with --config first (it must precede its overrides) and
    configs/eval.py when none is given."""
    from sandmle import config_lib
    rest, spec, i = [], f"--config={default_config_path()}", 1
    while i < len(argv):
        if argv[i].startswith("--config="):
            spec = argv[i]
        elif argv[i] == "--config" and i + 1 < len(argv):
            spec, i = f"--config={argv[i + 1]}", i + 1
        else:
            rest.append(argv[i])
        i += 1
    argv = [argv[0], spec, *rest]
    sys.argv = argv  # config_flags reads the overrides from sys.argv too
    return config_lib.parse_flags(argv)


def apply_flags(config: ml_collections.ConfigDict, fv: flags.FlagValues) -> None:
    """The shorthand flags onto the config (a flag wins over the config file)."""
    pairs = (("policy", "policy.kind"), ("path", "policy.path"), ("step", "policy.step"),
             ("tasks", "tasks.dir"), ("split", "tasks.split"), ("seeds", "eval.seeds"),
             ("num_tasks", "tasks.num_tasks"))
    for flag, field in pairs:
        value = fv[flag].value
        if value is not None:
            section, name = field.split(".")
            config[section][name] = value


def main(argv: list[str]) -> None:
    from sandmle import jobs, resume
    from sandmle.evaluate import check_workdir_compatible
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    fv = flags.FLAGS
    if not fv.workdir:
        raise UserError("--workdir=DIR is required (where results go; rerun to resume)")
    config = fv.config
    with config.unlocked():
        apply_flags(config, fv)
    if config.policy.kind == "checkpoint" and config.policy.path:
        config.policy.path = os.path.abspath(config.policy.path)
    workdir = resume.check_workdir(fv.workdir)
    check_workdir_compatible(config, workdir)
    jobs.run(config, workdir)


def run() -> None:
    """Console script `sandmle-eval`."""
    from sandmle import cli
    cli.run_app(main, prog="sandmle-eval", doc=__doc__, flags_parser=_parse)


if __name__ == "__main__":
    run()
