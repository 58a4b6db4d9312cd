"""Every console script: --help exits 0 with its own flags; bad input gets one line, exit 2.

The scripts come from setup.py's CONSOLE_SCRIPTS, so a new command is covered by the
--help test as soon as it is declared. The bad-input table runs each invocation the
way a user would (a fresh process) and checks the exit code, that stderr is exactly
one line without a traceback, and that nothing in the workdir was created or changed.
"""

import ast
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from configs import regression as regression_config
from sandmle import regression, resume
from test_checkpoint import _truncate_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REG = os.path.join(ROOT, "configs", "regression.py")


def console_scripts() -> dict[str, str]:
    """name -> "module:function" from setup.py (read, not executed)."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == \
                "CONSOLE_SCRIPTS":
            entries = ast.literal_eval(node.value)
            return dict(e.replace(" ", "").split("=", 1) for e in entries)
    raise AssertionError("setup.py declares no CONSOLE_SCRIPTS")


SCRIPTS = console_scripts()


def run_script(name, *args, cwd=ROOT, timeout=120, **kw):
    """Runs console script `name` from this checkout (not the installed copy)."""
    module, fn = SCRIPTS[name].split(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {fn}; {fn}()"
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


# The flags each known tool must list; a new script gets the generic checks.
OWN_FLAGS = {
    "sandmle": ["--config", "--workdir", "--[no]multihost"],
    "sandmle-sweep": ["--workdir", "--axis", "--parallel", "--backend", "--[no]dry_run"],
    "sandmle-envgen": ["--config", "--workdir"],
    "sandmle-memplan": ["--preset", "--topology", "--seq_len", "--mesh"],
    "sandmle-test-tokenizer": ["--out", "--vocab_size", "--seed"],
    "sandmle-grade": ["--task_dir", "--submission"],
    "sandmle-inspect": ["--step", "--[no]diff", "--[no]verify"],
    "sandmle-params": ["--preset", "--hf_config"],
    "sandmle-eval": ["--policy", "--path", "--tasks", "--seeds", "--workdir", "--config"],
    "sandmle-serve": ["--checkpoint", "--hf", "--host", "--port", "--max_model_len",
                      "--batch_wait_ms"],
    "sandmle-export": ["--checkpoint", "--step", "--out", "--dtype", "--[no]overwrite"],
    "sandmle-report": ["--out", "--max_trajectories"],
}


def test_every_declared_script_is_known_here():
    assert set(SCRIPTS) >= set(OWN_FLAGS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_exits_0_and_lists_the_tools_own_flags(name):
    proc = run_script(name, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Traceback" not in out + proc.stderr
    assert name in out.splitlines()[0] or name in out  # the usage names the tool
    assert "flags:" in out and any(line.startswith("  --") for line in out.splitlines())
    for flag in OWN_FLAGS.get(name, []):
        assert f"  {flag}:" in out, (flag, out)
    assert "(default:" in out
    assert "--verbosity" not in out  # absl's own flags only under --helpfull


def test_helpfull_adds_absl_flags():
    proc = run_script("sandmle", "--helpfull")
    assert proc.returncode == 0 and "--verbosity" in proc.stdout and "--config" in proc.stdout


# -- bad input ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory):
    """A finished regression run (steps 10 and 20 saved) the cases copy and misuse."""
    work = tmp_path_factory.mktemp("prepared") / "run"
    cfg = regression_config.get_config("runlocal")
    cfg.steps, cfg.checkpoint.every_steps = 20, 10
    regression.train_and_evaluate(cfg, str(work))
    from sandmle import config_lib
    config_lib.write_config(cfg, work)  # what `sandmle` stores before a run
    return work


def snapshot(top):
    """Every path under `top` with its size, mtime and content hash."""
    state = {}
    for root, dirs, files in os.walk(top):
        for d in dirs:
            state[os.path.relpath(os.path.join(root, d), top)] = "dir"
        for f in files:
            path = os.path.join(root, f)
            st = os.stat(path)
            with open(path, "rb") as fh:
                digest = hashlib.sha1(fh.read()).hexdigest()
            state[os.path.relpath(path, top)] = (st.st_size, st.st_mtime_ns, digest)
    return state


def _unwritable_dir(tmp):
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if resume._writable(str(ro)):  # root ignores permission bits: use a read-only fs
        ro.chmod(0o755)
        return "/sys/sandmle-test-unwritable"
    return str(ro)


# (id, script, args, words the one line must contain, setup). In args and words
# {tmp} is the case's own folder, {run} a copy of the prepared run inside it and
# {ro} a folder that cannot be written.
CASES = [
    ("config-file-missing", "sandmle", ["--config={tmp}/nope.py", "--workdir={tmp}/w"],
     ["config file", "nope.py", "does not exist"], None),
    ("config-file-misspelt", "sandmle",
     [f"--config={os.path.join(ROOT, 'configs', 'regresion.py')}", "--workdir={tmp}/w"],
     ["did you mean", "regression.py"], None),
    ("config-arg-misspelt", "sandmle", [f"--config={REG}:runlocl", "--workdir={tmp}/w"],
     ["unknown config arg 'runlocl'", "runlocal"], None),
    ("config-arg-bad-value", "sandmle", [f"--config={REG}:steps=x", "--workdir={tmp}/w"],
     ["cannot read 'x' as int"], None),
    ("override-misspelt", "sandmle",
     [f"--config={REG}:runlocal", "--workdir={tmp}/w", "--config.optim.lrr=3"],
     ["config.optim has no field 'lrr'", "Did you mean config.optim.lr?"], None),
    ("override-bad-type", "sandmle",
     [f"--config={REG}:runlocal", "--workdir={tmp}/w", "--config.steps=ten"],
     ["--config.steps=ten"], None),
    ("mesh-does-not-fit", "sandmle",
     [f"--config={REG}:runlocal", "--workdir={tmp}/w", "--config.mesh.shape=(3,1,1,1)"],
     ["config.mesh.shape", "holds 3 devices but 8 are available"], None),
    ("negative-steps", "sandmle",
     [f"--config={REG}:runlocal", "--workdir={tmp}/w", "--config.steps=-5"],
     ["config.steps must be an integer >= 1, got -5"], None),
    ("batch-not-divisible", "sandmle",
     [f"--config={REG}:runlocal", "--workdir={tmp}/w", "--config.batch_size=12"],
     ["config.batch_size 12 does not divide over the mesh"], None),
    ("workdir-is-a-file", "sandmle", [f"--config={REG}:runlocal", "--workdir={tmp}/file"],
     ["{tmp}/file is a file, not a directory"], "file"),
    ("workdir-under-a-file", "sandmle",
     [f"--config={REG}:runlocal", "--workdir={tmp}/file/run"], ["is a file"], "file"),
    ("workdir-unwritable", "sandmle", [f"--config={REG}:runlocal", "--workdir={ro}/run"],
     ["not writable"], "ro"),
    ("unknown-job", "sandmle",
     [f"--config={REG}:runlocal", "--workdir={tmp}/w", "--config.job=trian"],
     ["unknown job 'trian'", "regression"], None),
    ("unknown-flag", "sandmle", [f"--config={REG}:runlocal", "--workdir={tmp}/w", "--bogus"],
     ["Unknown command line flag 'bogus'"], None),
    ("stray-argument", "sandmle", [f"--config={REG}:runlocal", "--workdir={tmp}/w", "extra"],
     ["unexpected arguments: extra"], None),
    # No --config: the main job's configs/tiny_cpu.py, whose fields the override names.
    ("default-config", "sandmle", ["--workdir={tmp}/w", "--config.rl.stepz=3"],
     ["config.rl has no field 'stepz'"], None),
    ("task-set-missing", "sandmle", ["--workdir={tmp}/w", "--config.tasks.dir={tmp}/nope"],
     ["task set {tmp}/nope", "no split.json"], None),
    ("resume-changes-model", "sandmle",
     ["--config={run}/config.py", "--workdir={run}", "--config.model.hidden=64"],
     ["model.hidden: 32 -> 64", "cannot change on resume"], "run"),
    ("sweep-workdir-is-a-file", "sandmle-sweep",
     [f"{REG}:runlocal", "--workdir={tmp}/file"], ["is a file"], "file"),
    ("sweep-without-axes", "sandmle-sweep", ["{tmp}/plain.py", "--workdir={tmp}/sw"],
     ["defines no get_sweep", "--axis"], "plain"),
    ("sweep-bad-axis", "sandmle-sweep",
     [f"{REG}:runlocal", "--workdir={tmp}/sw", "--axis=optim.lr"],
     ["--axis=field=value1,value2"], None),
    ("sweep-axis-misspelt", "sandmle-sweep",
     [f"{REG}:runlocal", "--workdir={tmp}/sw", "--axis=optim.lrr=1,2"],
     ["config.optim has no field 'lrr'"], None),
    ("sweep-parallel-zero", "sandmle-sweep",
     [f"{REG}:runlocal", "--workdir={tmp}/sw", "--parallel=0"], ["--parallel"], None),
    ("envgen-workdir-is-a-file", "sandmle-envgen",
     [f"--config={os.path.join(ROOT, 'configs', 'envgen.py')}:runlocal",
      "--workdir={tmp}/file"], ["is a file"], "file"),
    ("envgen-config-missing", "sandmle-envgen", ["--config={tmp}/nope.py", "--workdir={tmp}/e"],
     ["does not exist"], None),
    ("params-bad-preset", "sandmle-params", ["--preset=qwen9"],
     ["unknown Qwen3 preset 'qwen9'"], None),
    ("params-missing-hf-config", "sandmle-params", ["--hf_config={tmp}/nope"], ["{tmp}/nope"],
     None),
    ("memplan-bad-preset", "sandmle-memplan", ["--preset=qwen9"], ["qwen9"], None),
    ("memplan-bad-mesh", "sandmle-memplan", ["--mesh=a,b"], ["--mesh='a,b'"], None),
    ("grade-missing-task", "sandmle-grade",
     ["--task_dir={tmp}/task", "--submission={tmp}/s.csv"], ["malformed task"], None),
    ("inspect-missing-path", "sandmle-inspect", ["{tmp}/nope"], ["does not exist"], None),
    ("inspect-no-checkpoints", "sandmle-inspect", ["{tmp}"], ["holds no checkpoints"], None),
    ("inspect-corrupt-step", "sandmle-inspect", ["{run}", "--step=20"],
     ["step 20", "is corrupt"], "corrupt-run"),
    ("inspect-diff-one-path", "sandmle-inspect", ["--diff", "{tmp}"],
     ["--diff needs two checkpoint paths"], None),
    ("tokenizer-out-is-a-file", "sandmle-test-tokenizer", ["--out={tmp}/file"],
     ["is a file"], "file"),
    ("eval-missing-checkpoint", "sandmle-eval",
     ["--policy=checkpoint", "--path={tmp}/nope", "--tasks={tmp}/tasks", "--workdir={tmp}/ev"],
     ["no checkpoint at {tmp}/nope"], "tasks"),
    ("eval-empty-task-set", "sandmle-eval", ["--tasks={tmp}/empty", "--workdir={tmp}/ev"],
     ["task set {tmp}/empty is empty"], "empty"),
    ("eval-unreachable-endpoint", "sandmle-eval",
     ["--policy=openai", "--path=http://127.0.0.1:9/v1", "--tasks={tmp}/tasks",
      "--workdir={tmp}/ev"], ["endpoint http://127.0.0.1:9/v1 is unreachable"], "tasks"),
    ("eval-no-workdir", "sandmle-eval", ["--tasks={tmp}/tasks"], ["--workdir"], "tasks"),
    ("serve-bad-port", "sandmle-serve", ["--checkpoint={tmp}", "--port=0"], ["--port"], None),
    ("serve-missing-checkpoint", "sandmle-serve", ["--checkpoint={tmp}/nope"],
     ["no checkpoint at {tmp}/nope"], None),
    ("serve-no-model", "sandmle-serve", [], ["give one model"], None),
    ("serve-missing-hf", "sandmle-serve", ["--hf={tmp}"], ["no Hugging Face model at {tmp}"],
     None),
    ("export-missing-checkpoint", "sandmle-export",
     ["--checkpoint={tmp}/nope", "--out={tmp}/hf"], ["no checkpoint at {tmp}/nope"], None),
    ("export-run-without-tokenizer", "sandmle-export", ["--checkpoint={run}",
                                                        "--out={tmp}/hf"],
     ["tokenizer directory {run}/tokenizer does not exist"], "run"),
    ("report-missing-workdir", "sandmle-report", ["{tmp}/nope"], ["no such directory"], None),
    ("report-nothing-to-report", "sandmle-report", ["{tmp}"], ["holds nothing to report"],
     None),
]


@pytest.mark.parametrize("case_id,script,args,words,setup", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, prepared_run, case_id, script,
                                                   args, words, setup):
    tmp = tmp_path / "case"
    tmp.mkdir()
    subs = {"tmp": str(tmp), "run": str(tmp / "run"), "ro": ""}
    if setup == "file":
        (tmp / "file").write_text("a file\n")
    elif setup in ("run", "corrupt-run"):
        shutil.copytree(prepared_run, tmp / "run")
        if setup == "corrupt-run":
            _truncate_arrays(tmp / "run" / "checkpoints" / "20")
    elif setup == "plain":
        (tmp / "plain.py").write_text(textwrap.dedent("""
            import ml_collections
            def get_config(arg=None):
                return ml_collections.ConfigDict({"job": "regression", "seed": 0})
        """))
    elif setup == "tasks":  # a task set of one (minimal) task
        (tmp / "tasks" / "t1" / "public").mkdir(parents=True)
        (tmp / "tasks" / "t1" / "private").mkdir()
        (tmp / "tasks" / "t1" / "public" / "description.md").write_text("# t1\n")
    elif setup == "empty":
        (tmp / "empty").mkdir()
    elif setup == "ro":
        subs["ro"] = _unwritable_dir(tmp)
    before = snapshot(tmp)
    proc = run_script(script, *[a.format(**subs) for a in args])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], proc.stderr[-3000:])
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"{script}: "), lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    for word in words:
        assert word.format(**subs) in lines[0], (word, lines[0])
    assert snapshot(tmp) == before, "the workdir changed"
    if subs["ro"].startswith("/sys/"):
        assert not os.path.exists(subs["ro"])


def test_ctrl_c_before_the_loop_is_one_line_exit_130(tmp_path):
    # A job still starting (not in a guarded loop) when Ctrl-C arrives.
    (tmp_path / "slowjob.py").write_text(textwrap.dedent("""
        import sys, time
        def start(config, workdir):
            print("ready", flush=True)
            time.sleep(60)
    """))
    cfg = tmp_path / "slow.py"
    cfg.write_text(textwrap.dedent("""
        import ml_collections
        def get_config(arg=None):
            return ml_collections.ConfigDict({"job": "slowjob:start"})
    """))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    # pytest-xdist workers ignore SIGINT and children inherit that; a terminal does not.
    proc = subprocess.Popen([sys.executable, "-m", "sandmle.main", f"--config={cfg}",
                             f"--workdir={tmp_path}/w"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("I")]
    assert lines == ["sandmle: interrupted"], err
    assert "Traceback" not in err


def test_inspect_refuses_a_bad_path_without_loading_jax(tmp_path):
    # The inspector imports its checkpoint reader only when there is something to read.
    code = (f"import sys; sys.argv=['sandmle-inspect', {str(tmp_path / 'nope')!r}]\n"
            "from sandmle import inspector\n"
            "try:\n    inspector.run()\nexcept SystemExit:\n    pass\n"
            "print('jax' in sys.modules, file=sys.stderr)")
    check = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert check.stderr.strip().splitlines()[-1] == "False", check.stderr
