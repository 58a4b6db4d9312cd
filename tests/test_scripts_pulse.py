"""Pulse test of every benchmark and experiment script, run the way a user runs it.

Each script is started as `python <path> <tiny flags>` in a fresh interpreter, from an
unrelated working directory with no PYTHONPATH, so a script that only imported because an
earlier test in the same worker had extended sys.path fails here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (script, tiny flags, a line the script must print, needs torch)
SCRIPTS = [
    ("benchmarks/forward_bench.py", ["--batch=1", "--length=8"], "max|dlogit|", True),
    ("benchmarks/sampler_bench.py",
     ["--batch_sizes=2", "--prompt_len=4", "--new_tokens=4", "--repeats=1"], "speedup", True),
    ("benchmarks/agent_sampler_bench.py",
     ["--conversations=2", "--min_turns=2", "--max_turns=2", "--prompt_len=8", "--min_obs=4",
      "--max_obs=8", "--min_gen=2", "--max_gen=4", "--min_latency=0", "--max_latency=0.01",
      "--decode_steps=2", "--repeats=1"], "continuous / lock-step", False),
    ("benchmarks/attention_bench.py", ["--check_len=64", "--memory_len=128", "--block=32"],
     "chunked / xla", False),
    ("benchmarks/learner_bench.py", ["--batch=2", "--seq_len=16", "--steps=1"],
     "GRPO update", False),
    ("benchmarks/sandbox_bench.py", ["--jobs=2", "--latency_runs=2", "--workers=1"],
     "throughput", False),
    ("benchmarks/sweep_bench.py", ["--axis=seed=0", "--override=steps=2",
                                   "--override=log_every=1", "--override=eval_every=1",
                                   "--override=optim.warmup_steps=1"],
     "wall-time ratio", False),
    ("benchmarks/envgen_speed.py",
     ["--n=1", "--variants=runlocal+fast+solutions=8+candidates=1"], "s/accepted", False),
    ("experiments/micro_vs_full.py",
     ["--dnas=1", "--max_solutions=1", "--modalities=tabular",
      f"--config={os.path.join(ROOT, 'configs', 'envgen.py')}"], "median ratio", False),
    ("experiments/export_parity.py", ["--num_tokens=8"], "max |dlogit| transformers vs sandmle",
     True),
]


# Scripts of the agent and the train loop run on one small generated task set ({tasks}),
# made once per module: the tiny config's quick envgen (4 tabular tasks).
SCRIPTS += [
    ("experiments/expert_demos.py", ["--tasks={tasks}", "--samples=1"], "milestone", False),
    ("benchmarks/rollout_bench.py",
     ["--tasks={tasks}", "--num_tasks=2", "--group=2", "--sequential=1", "--max_new_tokens=16",
      "--max_calls=2", "--quick"], "speedup", False),
    ("benchmarks/train_step_bench.py",
     ["--tasks={tasks}", "--steps=2", "--sft_steps=1", "--tasks_per_step=1", "--group=2",
      "--quick"], "step time ratio", False),
    ("experiments/tiny_reproduction.py",
     ["--tasks={tasks}", "--seeds=0", "--config_args=quick,rl_steps=1", "--boot=10"],
     "GRPO - SFT over", False),
]


@pytest.fixture(scope="module")
def quick_tasks(tmp_path_factory):
    from configs import tiny_cpu
    from sandmle.envgen.pipeline import run_envgen
    root = tmp_path_factory.mktemp("pulse_tasks") / "envgen"
    run_envgen(tiny_cpu.get_config("quick").tasks.envgen, str(root), progress=False,
               printer=lambda _: None)
    return root


# The {tasks} scripts run on one worker, so their task set is generated once (pytest.ini).
PARAMS = [pytest.param(*s, id=s[0], marks=[pytest.mark.xdist_group("pulse_tasks")]
                       if any("{tasks}" in a for a in s[1]) else [])
          for s in SCRIPTS]


@pytest.mark.parametrize("script,args,expect,needs_torch", PARAMS)
def test_script_runs_from_anywhere(request, tmp_path, script, args, expect, needs_torch):
    if needs_torch and importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch (pip install -e '.[torch]')")
    if any("{tasks}" in a for a in args):
        tasks = request.getfixturevalue("quick_tasks")
        args = [a.replace("{tasks}", str(tasks)) for a in args]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    if script.startswith("experiments/") or script.endswith("envgen_speed.py"):
        args = args + [f"--scratch={tmp_path}"]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert expect in proc.stdout + proc.stderr
