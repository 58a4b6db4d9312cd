"""Shared pieces of the evaluation, export, serve and report tests: tiny tasks, a tiny train
run (the layout the train job leaves), an exported HF directory, eval configs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "agent"))

import agent_helpers  # noqa: E402


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_parity = _load(ROOT / "experiments" / "export_parity.py", "export_parity_script")
make_tiny_run = export_parity.make_tiny_run
make_task = agent_helpers.make_task


def make_tasks(root: Path, kinds=("binary", "multiclass", "regression")) -> list[str]:
    """Small tabular tasks (public/ + private/) under root."""
    return [make_task(root, f"t{i}-{k}", k, seed=i, n_train=60, n_test=60)
            for i, k in enumerate(kinds)]


def make_mlebench_competition(root: Path, comp: str = "toy-comp") -> Path:
    """A prepared MLE-bench competition folder (accuracy, a 10-team leaderboard)."""
    rng = np.random.default_rng(0)
    base = root / comp
    public, private = base / "prepared" / "public", base / "prepared" / "private"
    public.mkdir(parents=True)
    private.mkdir(parents=True)
    x = rng.normal(size=(120, 3))
    y = (x[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)
    ids = [f"r{i}" for i in range(120)]
    df = pd.DataFrame({"id": ids, "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "target": y})
    df.iloc[:80].to_csv(public / "train.csv", index=False)
    df.iloc[80:].drop(columns="target").to_csv(public / "test.csv", index=False)
    df.iloc[80:][["id", "target"]].to_csv(private / "test.csv", index=False)
    df.iloc[80:][["id"]].assign(target=0).to_csv(public / "sample_submission.csv", index=False)
    pd.DataFrame({"teamId": range(10), "score": np.linspace(0.95, 0.5, 10)}).to_csv(
        base / "leaderboard.csv", index=False)
    (base / "description.md").write_text(f"# {comp}\n\nPredict target for test.csv.\n")
    (base / "config.yaml").write_text(f"id: {comp}\ngrader:\n  name: accuracy\n")
    return base


def eval_config(tasks: str, workdir_tokenizer: str = "", **policy):
    """configs/eval.py:quick with a one-device mesh and small agent limits."""
    from configs import eval as eval_config_module
    config = eval_config_module.get_config("quick")
    config.tasks.dir = tasks
    config.mesh.shape = (-1, 1, 1, 1)
    config.agent.max_calls = 3
    config.agent.exec_timeout_s = 30.0
    config.farm.limits.cpu_s = 30.0
    config.eval.report = False
    config.tokenizer.path = workdir_tokenizer
    for k, v in policy.items():
        config.policy[k] = v
    return config
