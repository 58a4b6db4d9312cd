"""A small Qwen3-style tokenizer for CPU tests: byte-level BPE with Qwen3's added tokens.

`build_test_tokenizer(path)` trains a BPE model with the `tokenizers` library on a built-in
corpus (prose about ML engineering, Python, JSON tool calls, CSV, shell output), using the
Qwen2/Qwen3 normaliser, pre-tokeniser and decoder, appends Qwen3's 26 added tokens in their
released order, and saves a directory `AutoTokenizer.from_pretrained` loads as a
`Qwen2Tokenizer` (the class real Qwen3 checkpoints name) with sandmle's chat template.

Command: sandmle-test-tokenizer --out=/tmp/tok --vocab_size=4096
"""

from __future__ import annotations

import itertools
import json
import os
import random
from typing import Iterable, Iterator

from sandmle.models import chat_format as cf

# The Qwen2/Qwen3 pre-tokenisation pattern (as in transformers' Qwen2Tokenizer).
PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                     r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

_WORDS = """
the a an of to in on for with from by and or not is are was were be been has have had this that
these those it its we you they our their model models data dataset datasets train training test
testing validation split fold folds score scores metric metrics accuracy loss error errors mean
median rows row column columns feature features label labels target targets class classes image
images text texts audio signal time series table tabular regression classification ranking
sample samples submission file files path paths directory read write load save run runs script
scripts python code function functions call calls tool tools output outputs input inputs result
results value values number numbers string strings list lists dict dictionary array arrays
matrix vector tensor tensors shape shapes size batch batches epoch epochs step steps learning
rate optimizer gradient gradients weight weights bias layer layers hidden attention head heads
token tokens vocabulary sequence sequences length lengths encoder decoder embedding embeddings
random forest tree trees boosting gradient linear logistic ridge lasso kernel neighbors cluster
clusters pipeline pipelines scaler encoder imputer missing category categories categorical
numeric numerical normalise normalize standardise standardize predict prediction predictions
probability probabilities threshold thresholds precision recall area curve roc auc log rmse
mae mape quadratic kappa spearman pearson correlation baseline leaderboard medal gold silver
bronze agent agents environment sandbox task tasks reward rewards policy policies rollout
rollouts trajectory trajectories advantage advantages group groups reference engineer
experiment experiments config configs parameter parameters hyperparameter hyperparameters
search grid seed seeds check checks first last next previous best worst better worse small
large tiny huge fast slow quickly slowly simple complex new old good bad high low more less
most least many few each every all some any none other same different because so then when
while if else should could would must can will may might need needs use uses used using try
tried first second third fourth fifth plan think thought answer question reason reasoning
let me see look looks now again done finished start started stop stopped wait waited fit
fitted fits evaluate evaluated evaluation report reports print printed return returns import
imports define defines class classes object objects method methods argument arguments error
warning exception traceback memory timeout limit limits cpu gpu device devices host hosts
shard sharding mesh axis axes parallel distributed checkpoint checkpoints restore resume
""".split()

_SYLLABLES = ("ka ri to ne sa mu lo pe di va zu chi ten mor bel gra sto fin ux ia qu ly "
              "an er on is at ex pro con tri dex").split()

_PROSE = """
An agent that engineers machine-learning solutions reads the task description, inspects the
training data, writes a script, runs it in the sandbox, and reads the output before it decides
what to try next. Small sandboxes make every execution cheap, so the reward for a whole
trajectory can be computed many times per step.
The grader compares the submission with the private answers and reports the score, whether it
beats the median of the leaderboard, and which medal it would have earned.
Let me first look at the data: the training file has a few hundred rows and a target column.
I'll start with a simple baseline and then try gradient boosting with cross-validation.
The validation accuracy went from 0.71 to 0.84 after I added the missing-value indicator.
Wait, the test set has categories that never appear in training; I should handle unknowns.
"""

_CODE = '''
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier, GradientBoostingRegressor
from sklearn.model_selection import KFold, cross_val_score, train_test_split
from sklearn.metrics import accuracy_score, mean_squared_error, roc_auc_score

train = pd.read_csv("train.csv")
test = pd.read_csv("test.csv")
X, y = train.drop(columns=["id", "target"]), train["target"]
model = RandomForestClassifier(n_estimators=200, max_depth=None, random_state=0)
scores = cross_val_score(model, X, y, cv=KFold(5, shuffle=True, random_state=0))
print(f"cv accuracy: {scores.mean():.4f} +/- {scores.std():.4f}")
model.fit(X, y)
pd.DataFrame({"id": test["id"], "target": model.predict(test.drop(columns=["id"]))}).to_csv(
    "submission.csv", index=False)

def load_images(paths: list[str]) -> np.ndarray:
    """Load images as float arrays in [0, 1]."""
    return np.stack([np.asarray(Image.open(p), dtype=np.float32) / 255.0 for p in paths])

for epoch in range(10):
    for batch in loader:
        loss = step(params, batch)
    if epoch % 2 == 0:
        print(epoch, float(loss))
'''

_SHELL = """
$ python solution.py
Traceback (most recent call last):
  File "solution.py", line 12, in <module>
KeyError: 'target'
$ ls public/
description.md  sample_submission.csv  test.csv  train.csv
$ head -3 train.csv
id,feature_0,feature_1,category,target
0,0.125,-1.5,red,1
1,2.75,0.0,blue,0
"""


def corpus(num_sentences: int = 12000, seed: int = 0) -> Iterator[str]:
    """The built-in training corpus: fixed passages plus seeded random sentences and rows."""
    yield from (_PROSE, _CODE, _SHELL)
    # The tools preamble, with the added tokens cut out (they are never BPE-merged).
    tool = {"type": "function", "function": {
        "name": "execute_python", "description": "Run Python code.",
        "parameters": {"type": "object", "properties": {"code": {"type": "string"}},
                       "required": ["code"]}}}
    preamble = cf.system_text([{"role": "system", "content": "You are a helpful assistant."}],
                              tools=[tool])
    for content, _ in cf.QWEN3_ADDED_TOKENS:
        preamble = preamble.replace(content, " ")
    yield preamble
    rng = random.Random(seed)
    for i in range(num_sentences):
        words = rng.choices(_WORDS, k=rng.randint(5, 16))
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        kind = i % 6
        if kind == 0:
            yield " ".join(words) + rng.choice([".", "?", "!", ":", ","]) + "\n"
        elif kind == 1:
            name = "_".join(words[:rng.randint(1, 3)])
            args = ", ".join(words[3:3 + rng.randint(0, 3)])
            yield f"def {name}({args}):\n    return {words[-1]}_{rng.randint(0, 99)}\n"
        elif kind == 2:
            args = {w: rng.choice([rng.randint(0, 999), round(rng.random(), 3), words[0]])
                    for w in words[:3]}
            call = {"name": words[-1], "arguments": args}
            yield json.dumps(call) + "\n"
        elif kind == 3:
            yield ",".join(f"{rng.gauss(0, 10):.{rng.randint(0, 4)}f}" for _ in range(6)) + "\n"
        elif kind == 4:
            yield "# " + " ".join(w.upper() if rng.random() < 0.1 else w for w in words) + "\n"
        else:
            # Made-up identifiers (column names, dataset ids): enough distinct words for the
            # trainer to reach vocabularies of several thousand.
            names = ["".join(rng.choices(_SYLLABLES, k=rng.randint(2, 4))) for _ in range(8)]
            yield " ".join(names) + "\n"


def build_test_tokenizer(path: str | os.PathLike, vocab_size: int = 4096, seed: int = 0,
                         extra_texts: Iterable[str] = ()) -> str:
    """Train a byte-level BPE tokenizer with Qwen3's added tokens and save it at `path`.

    Args:
      path: output directory (created).
      vocab_size: total ids including the 26 added tokens; training stops earlier if the corpus
        has no more merges, so `len(tokenizer)` may be smaller.
      seed: seed of the generated part of the corpus.
      extra_texts: more training text (e.g. a domain's prompts and code), so that its
        frequent words become single tokens.
    Returns:
      The directory, loadable with `ChatTokenizer.from_pretrained` / `AutoTokenizer`.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers import trainers
    from tokenizers.models import BPE

    num_added = len(cf.QWEN3_ADDED_TOKENS)
    if vocab_size < 256 + num_added:
        raise ValueError(f"vocab_size must be at least {256 + num_added} (256 bytes plus "
                         f"{num_added} added tokens), got {vocab_size}")
    tok = Tokenizer(BPE(unk_token=None, byte_fallback=False, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - num_added, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(itertools.chain(corpus(seed=seed), extra_texts), trainer)
    # Added in Qwen3's order so they take the last ids, as in the released tokenizer.
    for content, special in cf.QWEN3_ADDED_TOKENS:
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])

    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": cf.IM_END,
        "pad_token": cf.ENDOFTEXT,
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 131072,
        "split_special_tokens": False,
        "additional_special_tokens": [t for t, special in cf.QWEN3_ADDED_TOKENS[1:] if special],
        "chat_template": cf.chat_template(),
    }
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    return os.fspath(path)


def run(argv: list[str] | None = None) -> None:
    """Console entry point: build a test tokenizer directory."""
    from absl import flags

    from sandmle import cli, resume
    from sandmle.errors import UserError

    flags.DEFINE_string("out", None, "Output directory.", required=True)
    flags.DEFINE_integer("vocab_size", 4096, "Total vocabulary size including added tokens.")
    flags.DEFINE_integer("seed", 0, "Seed of the generated corpus.")

    def main(args):
        if len(args) > 1:
            raise UserError(f"unexpected arguments: {' '.join(args[1:])}")
        resume.check_workdir(flags.FLAGS.out, flag="--out")
        from sandmle.models.tokenizer import ChatTokenizer
        out = build_test_tokenizer(flags.FLAGS.out, flags.FLAGS.vocab_size, flags.FLAGS.seed)
        print(f"wrote {out}: {ChatTokenizer.from_pretrained(out).vocab_size} ids")

    cli.run_app(main, prog="sandmle-test-tokenizer", doc=_CLI_DOC, argv=argv)


_CLI_DOC = """sandmle-test-tokenizer: write a small Qwen3-style tokenizer directory for tests.

  sandmle-test-tokenizer --out=/tmp/tok [--vocab_size=4096] [--seed=0]
"""


if __name__ == "__main__":
    run()
