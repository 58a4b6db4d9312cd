r"""Evaluate a policy on a task set with k seeds: MLE-bench's table with mean +- SEM (job
`evaluate`; `sandmle-eval` builds this config from its flags).

    sandmle --config=configs/eval.py:policy=expert,tasks=/tmp/eval_tasks --workdir=/tmp/ev
    sandmle --config=configs/eval.py:policy=checkpoint,path=/tmp/run,tasks=/tmp/run/envgen \
        --workdir=/tmp/ev_ckpt
    sandmle-eval --policy=openai --path=http://127.0.0.1:8000/v1 --tasks=/tmp/eval_tasks \
        --workdir=/tmp/ev_api

Policies: `expert` (the scripted demonstrator), `checkpoint` (a train run's workdir, its
checkpoints/ folder or one step folder; `step=-1` is the newest that restores), `hf` (a
Hugging Face Qwen3 directory with its tokenizer), `openai` (an OpenAI-compatible endpoint's
base URL, e.g. sandmle-serve's or vLLM's).

Tasks (`tasks=`, `+`-separated in the arg, comma-separated on sandmle-eval): an envgen
workdir (its `split` list: validation, train or all), a folder of task directories, one task
directory, or a folder of MLE-bench prepared competitions (imported once into
<workdir>/mlebench_tasks).

Args: policy, path, step, tasks, split, seeds, num_tasks, seed, quick (tiny agent limits).
"""

import ml_collections

from configs.common import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, policy="expert", path="", step=-1, tasks=("", str), split="validation",
                    seeds=3, num_tasks=0, seed=0, quick=False)
    from sandmle.agent.config import default_config as agent_config, rollout_config
    from sandmle.sampling.config import default_config as sampling_config
    from sandmle.sandbox.config import default_config as farm_config

    config = ml_collections.ConfigDict()
    config.job = "evaluate"
    config.seed = arg.seed
    config.multihost = False
    config.mesh = ml_collections.ConfigDict({"shape": (-1, 1, 1, 1)})

    config.policy = ml_collections.ConfigDict()
    config.policy.kind = arg.policy       # expert | checkpoint | hf | openai
    config.policy.path = arg.path         # run workdir / step dir, HF dir, or base URL
    config.policy.step = arg.step         # checkpoint step; -1: the newest that restores
    # A checkpoint is evaluated with its run's agent, rollout and sampling sections (the
    # limits and format it was trained with); False: this config's sections.
    config.policy.run_settings = True
    config.policy.model = ""              # openai: the model name ('' = the server's first)
    config.policy.api_key = "EMPTY"
    config.policy.timeout_s = 600.0       # openai: one request
    config.policy.max_retries = 2
    config.policy.concurrency = 16        # openai: requests in flight
    config.policy.expert_bug_rate = 0.15

    config.tasks = ml_collections.ConfigDict()
    config.tasks.dir = arg.tasks.replace("+", ",")
    config.tasks.split = arg.split        # envgen workdirs: validation | train | all
    config.tasks.num_tasks = arg.num_tasks  # 0: every task

    config.eval = ml_collections.ConfigDict()
    config.eval.seeds = arg.seeds
    # (task, seed) pairs run in chunks of this many trajectories (one rollout batch); the
    # results of a chunk are on disk once it finishes, so a killed run redoes at most one.
    config.eval.chunk_size = 16
    config.eval.report = True             # write report.html at the end

    config.tokenizer = ml_collections.ConfigDict({"path": "", "vocab_size": 2048})
    config.model = ml_collections.ConfigDict({"hf_path": "", "preset": "tiny"})
    config.model.overrides = ml_collections.ConfigDict()

    config.agent = agent_config()
    config.rollout = rollout_config()
    config.rollout.backend = "lockstep"
    config.rollout.num_slots = 64
    config.sampling = sampling_config()
    config.farm = farm_config()
    config.farm.num_workers = 2
    if arg.quick:
        config.agent.max_calls = 4
        config.agent.exec_timeout_s = 60.0
        config.agent.max_new_tokens = 256
        config.agent.max_context_tokens = 4096
        config.agent.description_max_tokens = 256
        config.agent.observation_max_tokens = 160
        config.agent.show_seconds = False
    config.resume_safe_fields = ("eval.chunk_size", "eval.report", "farm.num_workers",
                                 "mesh", "policy.concurrency", "policy.timeout_s")
    return config
