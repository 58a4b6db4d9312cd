"""Small real tasks, a test tokenizer and a tiny policy for the agent tests."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from sandmle.tasks import thresholds


def make_task(root: str | Path, name: str = "t-binary", kind: str = "binary", seed: int = 0,
              n_train: int = 120, n_test: int = 200) -> str:
    """A tabular task on disk (public/ + private/) from scikit-learn's generators.

    kind: 'binary' (roc_auc on probabilities), 'multiclass' (accuracy on labels) or
    'regression' (rmse). The leaderboard comes from noisy versions of the true answers,
    so thresholds are reachable by a real model and not by a constant.
    """
    from sklearn.datasets import make_classification, make_regression
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    if kind == "regression":
        x, y = make_regression(n, 6, n_informative=4, noise=5.0, random_state=seed)
    else:
        classes = 2 if kind == "binary" else 3
        x, y = make_classification(n, 6, n_informative=4, n_classes=classes,
                                   random_state=seed)
    ids = [f"r{i:04d}" for i in rng.permutation(n)]
    cols = {f"f{j}": np.round(x[:, j], 4) for j in range(x.shape[1])}
    df = pd.DataFrame({"id": ids, **cols, "target": y})
    train, test = df.iloc[:n_train], df.iloc[n_train:]
    task = Path(root) / name
    (task / "public").mkdir(parents=True, exist_ok=True)
    (task / "private").mkdir(parents=True, exist_ok=True)
    train.to_csv(task / "public" / "train.csv", index=False)
    test.drop(columns=["target"]).to_csv(task / "public" / "test.csv", index=False)
    answers = test[["id", "target"]]
    answers.to_csv(task / "private" / "answers.csv", index=False)
    if kind == "binary":
        metric, sub_kind, lower, labels = "roc_auc", "probability", False, [0, 1]
        sample = np.full(len(test), float(y[:n_train].mean()))
        board = [0.5 + 0.45 * q for q in np.linspace(1, 0, 20)]
    elif kind == "multiclass":
        metric, sub_kind, lower, labels = "accuracy", "label", False, [0, 1, 2]
        sample = np.zeros(len(test), int)
        board = [0.33 + 0.6 * q for q in np.linspace(1, 0, 20)]
    else:
        metric, sub_kind, lower, labels = "rmse", "value", True, None
        sample = np.full(len(test), float(y[:n_train].mean()))
        spread = float(np.std(y))
        board = [spread * (0.1 + q) for q in np.linspace(0, 1, 20)]
    pd.DataFrame({"id": test["id"], "target": sample}).to_csv(
        task / "public" / "sample_submission.csv", index=False)
    grading = {"metric": metric, "metric_kwargs": {}, "is_lower_better": lower,
               "id_column": "id", "target_columns": ["target"], "submission_kind": sub_kind,
               "labels": labels, "leaderboard": board,
               "thresholds": thresholds.medal_thresholds(board, lower),
               "sample_submission_score": board[-1]}
    (task / "private" / "grading.json").write_text(json.dumps(grading))
    (task / "private" / "dna.json").write_text(json.dumps({"modality": "tabular"}))
    (task / "private" / "provenance.json").write_text(json.dumps(
        {"seed_id": "test", "generator_version": "test", "random_seed": seed}))
    (task / "public" / "description.md").write_text(
        f"# Test task {name}\n\nPredict `target` for each row of test.csv. Submissions are "
        f"scored with `{metric}`; {'lower' if lower else 'higher'} is better.\n")
    return str(task)


@functools.lru_cache(maxsize=None)
def tokenizer_dir(root: str) -> str:
    from sandmle.models.tiny_tokenizer import build_test_tokenizer
    return build_test_tokenizer(Path(root) / "tok", vocab_size=1024)


def tokenizer(root: str):
    from sandmle.models.tokenizer import ChatTokenizer
    return ChatTokenizer.from_pretrained(tokenizer_dir(root))


def tiny_model(vocab: int, seed: int = 0, layers: int = 1, attention: str = "xla"):
    """A tiny random Qwen3 on one device."""
    import jax
    from flax import nnx
    from sandmle.models import qwen3
    cfg = qwen3.get_preset("tiny", vocab_size=vocab, num_hidden_layers=layers,
                           attention=attention)
    with jax.default_device(jax.devices()[0]):
        return qwen3.Qwen3(cfg, rngs=nnx.Rngs(seed))


class ScriptedPolicy:
    """A backend that writes given assistant texts (one list per row), cycling the last."""

    name = "scripted"
    gathers = False

    def __init__(self, tok, scripts: dict[int, list[str]]):
        self.tok, self.scripts = tok, scripts
        self._queue = []

    def submit(self, request):
        self._queue.append(request)

    def pending(self):
        return len(self._queue)

    def release(self, row):
        pass

    def step(self):
        from sandmle.agent.policy import TurnOutput
        queue, self._queue = self._queue, []
        out = []
        for req in queue:
            texts = self.scripts[req.row]
            text = texts[min(req.info["turn"], len(texts) - 1)]
            ids = self.tok.encode(text + "<|im_end|>")
            out.append(TurnOutput(req.row, ids, [0.0] * len(ids), "stop"))
        return out


class RoutedPolicy:
    """Rows in `routes` go to their backend, the others to `default` (one rollout batch)."""

    name = "routed"

    def __init__(self, default, routes: dict[int, object]):
        self.default, self.routes = default, routes
        self.gathers = getattr(default, "gathers", True)

    def _of(self, row):
        return self.routes.get(row, self.default)

    def submit(self, request):
        self._of(request.row).submit(request)

    def pending(self):
        return sum(p.pending() for p in {id(p): p for p in [self.default, *self.routes.values()]}.values())

    def release(self, row):
        self._of(row).release(row)

    def step(self):
        out = []
        for p in {id(p): p for p in [self.default, *self.routes.values()]}.values():
            if p.pending():
                out += p.step()
        return out


def tool_call(code: str, think: str = "run") -> str:
    import json
    return (f"<think>\n{think}\n</think>\n\n<tool_call>\n"
            + json.dumps({"name": "execute_python", "arguments": {"code": code}})
            + "\n</tool_call>")


def farm_config():
    from sandmle.sandbox.config import default_config
    c = default_config()
    c.num_workers = 2
    c.limits.cpu_s = 30.0
    return c


def agent_config(**kw):
    from sandmle.agent.config import default_config
    c = default_config()
    c.max_calls = 4
    c.exec_timeout_s = 20.0
    c.max_new_tokens = 64
    c.max_context_tokens = 4096
    c.description_max_tokens = 512
    c.observation_max_tokens = 256
    c.show_seconds = False
    for k, v in kw.items():
        c[k] = v
    return c
