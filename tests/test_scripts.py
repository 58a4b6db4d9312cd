"""Every benchmark and experiment script behaves like a command: --help exits 0 and lists
its flags; a bad flag or bad value gets one stderr line and exit 2, before any work.

The scripts are found on disk (any `benchmarks/*.py` or `experiments/*.py` with a
`__main__` block), so a new one is covered as soon as it lands.
"""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scripts() -> list[str]:
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
                       + glob.glob(os.path.join(ROOT, "experiments", "*.py"))):
        with open(path) as f:
            if 'if __name__ == "__main__":' in f.read():
                found.append(os.path.relpath(path, ROOT))
    return found


SCRIPTS = scripts()


def run(script, *args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def own_flags(script) -> list[str]:
    with open(os.path.join(ROOT, script)) as f:
        return re.findall(r'DEFINE_\w+\(\s*"(\w+)"', f.read())


def test_the_scripts_are_found():
    assert "benchmarks/sampler_bench.py" in SCRIPTS
    assert "experiments/tiny_reproduction.py" in SCRIPTS
    assert len(SCRIPTS) >= 15


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_0_and_an_unknown_flag_exits_2(script):
    proc = run(script, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = own_flags(script)
    assert names, f"{script} defines no flags of its own"
    for name in names:
        assert re.search(rf"--(\[no\])?{name}:", proc.stdout), (name, proc.stdout[-2000:])
    proc = run(script, "--no_such_flag=1")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "no_such_flag" in lines[0] and "Traceback" not in proc.stderr


# (script, args, words the one line must contain); {tmp} is the test's own folder.
BAD = [
    ("benchmarks/sampler_bench.py", ["--batch_sizes=16,x"], ["--batch_sizes", "'x'"]),
    ("benchmarks/sampler_bench.py", ["--preset=qwen9"], ["unknown Qwen3 preset 'qwen9'"]),
    ("benchmarks/forward_bench.py", ["--preset=qwen9"], ["unknown Qwen3 preset 'qwen9'"]),
    ("benchmarks/learner_bench.py", ["--preset=qwen9"], ["unknown Qwen3 preset 'qwen9'"]),
    ("benchmarks/sandbox_bench.py", ["--jobs=0"], ["--jobs=0"]),
    ("benchmarks/agent_sampler_bench.py", ["--conversations=0"], ["--conversations=0"]),
    ("benchmarks/rollout_bench.py", ["--tasks={tmp}/nope"],
     ["task set {tmp}/nope", "no split.json"]),
    ("benchmarks/train_step_bench.py", ["--steps=1"], ["--steps=1"]),
    ("experiments/tiny_reproduction.py", ["--tasks={tmp}/nope", "--scratch={tmp}/runs"],
     ["task set {tmp}/nope"]),
    ("experiments/tiny_reproduction.py", ["--seeds=0,one", "--scratch={tmp}/runs"],
     ["--seeds"]),
    ("experiments/expert_demos.py", [], ["--tasks=DIR is required"]),
    ("experiments/expert_demos.py", ["--tasks={tmp}", "--bug_rate=2"], ["--bug_rate=2"]),
]


@pytest.mark.parametrize("script,args,words", BAD,
                         ids=[f"{os.path.basename(s)}:{' '.join(a)}" for s, a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, script, args, words):
    tmp = str(tmp_path)
    proc = run(script, *[a.format(tmp=tmp) for a in args])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith(os.path.basename(script) + ": "), lines[0]
    for word in words:
        assert word.format(tmp=tmp) in lines[0], (word, lines[0])
    assert os.listdir(tmp) == []


def test_tiny_reproduction_does_not_reuse_a_finished_run_of_another_config(tmp_path):
    """A finished seed workdir made with another task set is refused, not reported."""
    tasks = tmp_path / "tasks"
    (tasks / "tasks" / "a" / "public").mkdir(parents=True)
    (tasks / "tasks" / "a" / "public" / "description.md").write_text("# a\n")
    (tasks / "split.json").write_text('{"train": ["a"], "validation": ["a"]}')
    sys.path.insert(0, ROOT)
    from sandmle import config_lib
    cfg = config_lib.load_config(os.path.join(ROOT, "configs", "tiny_cpu.py") + ":seed=0")
    seed0 = tmp_path / "runs" / "seed0"
    (seed0 / "checkpoints" / "1").mkdir(parents=True)
    config_lib.write_config(cfg, seed0)  # a finished run that generated its own tasks
    (seed0 / "results.json").write_text('{"phase": "done"}')
    proc = run("experiments/tiny_reproduction.py", "--seeds=0", f"--tasks={tasks}",
               f"--scratch={tmp_path / 'runs'}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "different config" in lines[0] and "tasks.dir" in lines[0], lines[0]
    assert "result:" not in proc.stdout
