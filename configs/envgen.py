"""Synthetic task generation (SandMLE's four roles) from the seed library.

Generate at least 64 verified tasks (stops launching candidates once 64 are accepted):

    sandmle-envgen --config=configs/envgen.py --workdir=/tmp/envgen

A quick local run (6 accepted tasks over 4 modalities, shorter leaderboards; about 1-2
minutes on 2 cores), or about 24 accepted tasks in a few minutes:

    sandmle-envgen --config=configs/envgen.py:runlocal --workdir=/tmp/envgen_local
    sandmle-envgen --config=configs/envgen.py:runlocal,n=24 --workdir=/tmp/envgen_24

Rerunning a command into the same --workdir resumes it (raise n= to extend a run).

Use LLM-backed roles against an OpenAI-compatible endpoint:

    sandmle-envgen --config=configs/envgen.py:llm_roles \
        --config.llm.base_url=http://127.0.0.1:8000/v1 --config.llm.model=qwen3 \
        --workdir=/tmp/envgen_llm

Args (after the colon, comma separated): runlocal, llm_roles, n=<target accepted>,
candidates=<max candidates>, seed=<int>, parallel=<candidates in flight>,
solutions=<reference solutions per task, 0: all>, test_scale=<factor on test set sizes>,
fast (10 references and half-size test sets: `runlocal,fast`; benchmarks/envgen_speed.py
measures what it saves).

Mix: `config.mix.modality` / `config.mix.task_type` weights (default: the paper's modality
mix, sandmle.envgen.mix), e.g. --config.mix.modality.audio=0.1.
"""

from configs.common import parse_arg
import ml_collections


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False, llm_roles=False, n=(None, int), candidates=(None, int),
                    seed=0, parallel=2, solutions=(None, int), test_scale=1.0, fast=False)
    from sandmle.envgen import llm, mix
    config = ml_collections.ConfigDict()
    config.job = "envgen"                    # sandmle.jobs registry name
    n = arg.n if arg.n is not None else (6 if arg.runlocal else 64)
    config.seed = arg.seed
    config.target_accepted = n               # accepted tasks wanted, in the mix's proportions (0: no target)
    # Upper bound on candidates launched (about half of the candidates pass verification).
    config.num_candidates = arg.candidates if arg.candidates is not None else max(12, 4 * n)
    config.parallel_candidates = arg.parallel
    config.scale = "micro"
    config.test_size_scale = arg.test_scale  # multiplies each DNA's test size (speed knob)
    config.mix = ml_collections.ConfigDict({"modality": dict(mix.PAPER_MODALITY_WEIGHTS),
                                            "task_type": dict(mix.DEFAULT_TASK_TYPE_WEIGHTS)})
    config.seed_ids = ()                     # empty: every seed of the library, round robin
    config.min_scored_solutions = 10         # fewer scored references -> leaderboard_failed
    config.validation_fraction = 64 / 912    # the paper's 848 train + 64 validation
    config.keep_staging = False

    kind = "llm" if arg.llm_roles else "procedural"
    config.roles = ml_collections.ConfigDict(
        {"strategist": kind, "developer": kind, "writer": kind})
    config.llm = llm.default_config()

    config.developer = ml_collections.ConfigDict()
    config.developer.solution_timeout_s = 60.0
    # 0: every reference solution (>= 20); k: k spread over the tiers, shortcuts kept.
    config.developer.max_solutions = 0 if arg.solutions is None else arg.solutions
    config.developer.crash_retries = 1       # reruns of jobs the farm reports as crashed
    config.developer.limits = None           # per-job Limits fields; None: the farm defaults

    config.verify = ml_collections.ConfigDict(
        {"margin_abs": 0.02, "margin_rel": 0.02, "leak_z": 4.0, "leak_min_rho": 0.3,
         "trivial_tier": "trivial", "strong_tier": "strong",
         # noise: bootstrap resamples of the test set; span and signal in bootstrap SDs
         "bootstrap_samples": 200, "span_sd": 3.0, "signal_sd": 3.0})

    config.farm = _farm_config()
    if arg.runlocal:  # the quick start: shorter leaderboards, a lighter bootstrap
        config.developer.max_solutions = 14 if arg.solutions is None else arg.solutions
        config.verify.bootstrap_samples = 100
    if arg.fast:  # speed over leaderboard size: 10 references, half-size test sets
        config.developer.max_solutions = 10 if arg.solutions is None else arg.solutions
        config.test_size_scale = 0.5 if arg.test_scale == 1.0 else arg.test_scale
        config.min_scored_solutions = min(config.min_scored_solutions, 8)
    return config


def _farm_config():
    try:
        from sandmle.sandbox.config import default_config
    except ImportError:  # the sandbox package provides its defaults; keep the config loadable
        return ml_collections.ConfigDict()
    return default_config()
