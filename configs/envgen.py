"""Synthetic task generation (SandMLE's four roles) from the seed library.

Generate at least 64 verified tasks (stops launching candidates once 64 are accepted):

    sandmle-envgen --config=configs/envgen.py --workdir=/tmp/envgen

A quick local run (a handful of candidates, short leaderboards):

    sandmle-envgen --config=configs/envgen.py:runlocal --workdir=/tmp/envgen_local

Use LLM-backed roles against an OpenAI-compatible endpoint:

    sandmle-envgen --config=configs/envgen.py:llm_roles \
        --config.llm.base_url=http://127.0.0.1:8000/v1 --config.llm.model=qwen3 \
        --workdir=/tmp/envgen_llm

Args (after the colon, comma separated): runlocal, llm_roles, n=<target accepted>,
candidates=<max candidates>, seed=<int>, parallel=<candidates in flight>.
"""

from configs.common import parse_arg
import ml_collections


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False, llm_roles=False, n=64, candidates=160, seed=0, parallel=2)
    from sandmle.envgen import llm
    config = ml_collections.ConfigDict()
    config.job = "envgen"                    # sandmle.jobs registry name
    config.seed = arg.seed
    config.num_candidates = arg.candidates   # upper bound on candidates launched
    config.target_accepted = arg.n           # stop launching once this many are accepted (0: never)
    config.parallel_candidates = arg.parallel
    config.scale = "micro"
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
    config.developer.max_solutions = 0       # 0: every reference solution (>= 20)
    config.developer.crash_retries = 1       # reruns of jobs the farm reports as crashed
    config.developer.limits = None           # per-job Limits fields; None: the farm defaults

    config.verify = ml_collections.ConfigDict(
        {"margin_abs": 0.02, "margin_rel": 0.02, "leak_z": 4.0, "leak_min_rho": 0.3,
         "trivial_tier": "trivial", "strong_tier": "strong"})

    config.farm = _farm_config()
    if arg.runlocal:
        config.num_candidates = 6
        config.target_accepted = 0
    return config


def _farm_config():
    try:
        from sandmle.sandbox.config import default_config
    except ImportError:  # the sandbox package provides its defaults; keep the config loadable
        return ml_collections.ConfigDict()
    return default_config()
