"""A scripted demonstrator that solves tasks through the agent's own tools and format.

`ExpertPolicy` is a policy backend (see policy.py): the rollout engine asks it for turns
exactly as it asks the sampler, so its trajectories go through the same scaffold, farm,
grading and reward, and its turns are the token ids of `ChatTokenizer.assistant_ids` (the
canonical encoding of each message). It sees only what an agent sees: the task's
description and the files in ./input (its code reads them at run time), and the
observations it gets back; never the DNA or private/.

Its code is one short, task-agnostic script (`SOLUTION`): it reads the column names and
the submission format from the CSV files, builds features from numeric, categorical and
text columns, media files named by id and a graph's node degrees, and predicts each
submission column as a probability, a label, a ranking or a value, whichever the sample
submission and the training target call for. What varies between demonstrations are the
choices a policy can learn to make better: the model family and its size, whether text
and media features are used, and whether it inspects, validates and scores (short vs
thorough). Some demonstrations carry a planted bug that the next turn fixes. Choices are
drawn from a seeded generator, so the demonstrations span the milestone levels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sandmle.agent.policy import TurnOutput, TurnRequest

INSPECT = """\
import os
import pandas as pd
print(sorted(os.listdir('input')))
tr = pd.read_csv('input/train.csv')
print(tr.shape, list(tr.columns)[:12])
print(pd.read_csv('input/sample_submission.csv').head(3))"""

SOLUTION = """\
import numpy as np, pandas as pd
from PIL import Image
from sklearn import dummy, ensemble, linear_model, neighbors, tree
CLS, REG = {model}
tr, te, ss = [pd.read_csv(f'input/{{f}}.csv') for f in ('train', '{test_name}', 'sample_submission')]
X = [np.ones((len(tr) + len(te), 1))]
for c in te.columns[1:]:
    s = pd.concat([tr[c], te[c]])
    if s.dtype.kind in 'biuf':
        X.append(s.fillna(s.median()).values[:, None])
    elif {images} and s.astype(str).str.endswith('.png').all():
        X.append([np.asarray(Image.open('input/' + p).convert('L').resize((8, 8))).ravel() for p in s])
    else:
        X.append(pd.get_dummies(s).values[:, :50])
X = np.hstack(X).astype(float)
lab = tr.columns.difference(te.columns)
sub = pd.DataFrame({{ss.columns[0]: te[ss.columns[0]]}})
for c in ss.columns[1:]:
    y = tr[c] if c in tr else (tr[lab[0]].astype(str) == c).astype(int)
    if ss[c].dtype.kind == 'f' and y.nunique() <= 2:
        sub[c] = CLS.fit(X[:len(tr)], y).predict_proba(X[len(tr):])[:, -1]
    elif y.dtype.kind == 'f':
        sub[c] = REG.fit(X[:len(tr)], y).predict(X[len(tr):])
    else:
        sub[c] = CLS.fit(X[:len(tr)], y.astype(str)).predict(X[len(tr):])
if not set(ss.columns[1:]) & set(tr.columns):
    sub[ss.columns[1:]] = sub[ss.columns[1:]].div(sub[ss.columns[1:]].sum(1) + 1e-9, axis=0)
sub.to_csv('submission.csv', index=False)
print(sub.shape)"""

FALLBACK = """\
import pandas as pd
pd.read_csv('input/sample_submission.csv').to_csv('submission.csv', index=False)
print('copied the sample submission')"""

# (name, words in the think text, weight, (classifier, regressor) expressions with {n}/{k})
MODELS = (
    ("dummy", "a constant baseline", 1.0,
     "dummy.DummyClassifier(strategy='prior'), dummy.DummyRegressor()"),
    ("linear", "a regularised linear model", 1.0,
     "linear_model.LogisticRegression(C={c}, max_iter=500), linear_model.Ridge(alpha={a})"),
    ("knn", "k nearest neighbours", 1.0,
     "neighbors.KNeighborsClassifier({k}), neighbors.KNeighborsRegressor({k})"),
    ("tree", "a decision tree", 1.0,
     "tree.DecisionTreeClassifier(max_depth={d}), tree.DecisionTreeRegressor(max_depth={d})"),
    ("forest", "a random forest", 1.5,
     "ensemble.RandomForestClassifier({n}, random_state=0), "
     "ensemble.RandomForestRegressor({n}, random_state=0)"),
    ("boosting", "gradient boosting", 1.5,
     "ensemble.HistGradientBoostingClassifier(max_iter={m}, early_stopping=False), "
     "ensemble.HistGradientBoostingRegressor(max_iter={m})"),
)
MODEL_NAMES = tuple(m[0] for m in MODELS)
STRONG = ("forest", "boosting")


@dataclasses.dataclass
class Choices:
    """What one demonstration decided (drawn with a seed)."""

    model: str
    params: dict
    text: bool
    media: bool
    thorough: bool
    bug: bool

    def model_expr(self) -> str:
        expr = dict((m[0], m[3]) for m in MODELS)[self.model]
        return expr.format(**self.params)

    def model_words(self) -> str:
        return dict((m[0], m[1]) for m in MODELS)[self.model]


def draw_choices(rng: np.random.Generator, bug_rate: float = 0.15,
                 model: str | None = None, thorough_rate: float = 0.6) -> Choices:
    """Random choices of one demonstration."""
    if model is None:
        weights = np.array([m[2] for m in MODELS])
        model = MODEL_NAMES[rng.choice(len(MODELS), p=weights / weights.sum())]
    params = {"n": int(rng.choice([50, 100, 200])), "m": int(rng.choice([30, 60, 100])), "k": int(rng.choice([5, 15, 30])),
              "d": int(rng.choice([3, 6, 10])), "c": float(rng.choice([0.1, 1.0])),
              "a": float(rng.choice([1.0, 10.0]))}
    return Choices(model=model, params=params, text=bool(rng.random() < 0.8),
                   media=bool(rng.random() < 0.8), thorough=bool(rng.random() < thorough_rate),
                   bug=bool(rng.random() < bug_rate))


def solution_code(choices: Choices, bug: bool = False) -> str:
    """The solution script for these choices (optionally with its planted bug)."""
    return SOLUTION.format(model=choices.model_expr(), images=choices.media,
                           test_name="tset" if bug else "test")


def tool_message(think: str, name: str, arguments: dict) -> dict:
    return {"role": "assistant", "reasoning_content": think, "content": "",
            "tool_calls": [{"type": "function",
                            "function": {"name": name, "arguments": arguments}}]}


def answer_message(think: str, text: str) -> dict:
    return {"role": "assistant", "reasoning_content": think, "content": text}


@dataclasses.dataclass
class _Plan:
    choices: Choices
    stage: str = "start"
    fixed: bool = False
    improved: bool = False
    fell_back: bool = False


class ExpertPolicy:
    """The scripted expert as a policy backend (no sampler; logprobs are 0).

    Args:
      tokenizer: the ChatTokenizer whose canonical ids make the turns.
      tools: names of the enabled tools (validate/score are used when present).
      seed: seed of the choices; row r of a batch draws from (seed, r).
      bug_rate: fraction of demonstrations whose first solution has a planted bug.
      model: force one model family (None: drawn).
      thorough_rate: fraction of demonstrations that inspect, validate and score.
    """

    name = "expert"
    gathers = False

    def __init__(self, tokenizer: Any, tools: tuple[str, ...] = ("execute_python", "validate"),
                 seed: int = 0, bug_rate: float = 0.15, model: str | None = None,
                 thorough_rate: float = 0.6):
        self.tok = tokenizer
        self.tools = tuple(tools)
        self.seed = seed
        self.bug_rate = bug_rate
        self.model = model
        self.thorough_rate = thorough_rate
        self._plans: dict[int, _Plan] = {}
        self._queue: list[TurnRequest] = []

    def reseed(self, seed: int) -> None:
        self.seed = seed

    def submit(self, request: TurnRequest) -> None:
        self._queue.append(request)

    def pending(self) -> int:
        return len(self._queue)

    def release(self, row: int) -> None:
        self._plans.pop(row, None)

    def choices_for(self, row: int) -> Choices:
        return self._plan(row).choices

    def _plan(self, row: int) -> _Plan:
        if row not in self._plans:
            rng = np.random.default_rng((self.seed, row))
            self._plans[row] = _Plan(draw_choices(rng, self.bug_rate, self.model,
                                                  self.thorough_rate))
        return self._plans[row]

    def step(self) -> list[TurnOutput]:
        queue, self._queue = self._queue, []
        out = []
        for req in queue:
            ids = self.tok.assistant_ids(self.next_message(req))
            out.append(TurnOutput(row=req.row, tokens=ids, logprobs=[0.0] * len(ids),
                                  finish_reason="stop"))
        return out

    def next_message(self, req: TurnRequest) -> dict:
        """The expert's next assistant message for this row, given what it last observed."""
        plan = self._plan(req.row)
        ch = plan.choices
        status, obs = req.info.get("status"), req.info.get("observation") or ""
        solve = tool_message(f"Fit {ch.model_words()} on the features and write the "
                             f"submission.", "execute_python",
                             {"code": solution_code(ch, bug=ch.bug)})
        if plan.stage == "start":
            plan.stage = "inspect" if ch.thorough else "solve"
            if ch.thorough:
                return tool_message("Look at the files and the submission format first.",
                                    "execute_python", {"code": INSPECT})
            return solve
        if plan.stage == "inspect":
            plan.stage = "solve"
            return solve
        if plan.stage in ("solve", "improve") and status != "ok":
            if not plan.fixed and ch.bug and "tset" in obs:
                plan.fixed = True
                return tool_message("The test file name was misspelt; fix it and rerun.",
                                    "execute_python", {"code": solution_code(ch)})
            if not plan.fell_back:
                plan.fell_back = True
                return tool_message("The solution failed; write the sample submission so "
                                    "that something valid is there.", "execute_python",
                                    {"code": FALLBACK})
        if plan.stage in ("solve", "improve") and ch.thorough and "validate" in self.tools:
            plan.stage = "validated"
            return tool_message("Check that the submission has the right format.", "validate",
                                {})
        if (plan.stage in ("solve", "validated") and ch.thorough and "score" in self.tools
                and not plan.improved):
            plan.stage = "scored"
            return tool_message("See which milestones the submission reaches.", "score", {})
        if plan.stage == "scored" and "medal: none" in obs and ch.model not in STRONG:
            plan.improved, plan.stage = True, "improve"
            ch.model = STRONG[int(np.random.default_rng((self.seed, req.row, 1)).integers(2))]
            return tool_message(f"No medal yet; try {ch.model_words()} instead.",
                                "execute_python", {"code": solution_code(ch)})
        plan.stage = "done"
        return answer_message("The submission is written.", "Done: ./submission.csv holds "
                              "the predictions for test.csv.")
