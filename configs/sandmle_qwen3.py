r"""The paper's runs: Seed-SFT then trajectory-wise GRPO on Qwen3-8B / 14B / 30B-A3B.

SandMLE (arXiv 2604.04872): GRPO with group 4, 16 tasks per step, lr 1e-6, clip 0.2 / 0.28,
no KL, seq-mean-token-mean aggregation, temperature 1.0; at most 15 LLM calls per
trajectory, 300 s per execution, a 32k context; Seed-SFT with lr 1e-5 for 200 steps.

Weights and tokenizer come from a local Hugging Face checkpoint; tasks from an envgen
workdir (the paper: 848 train + 64 validation tasks).

    # Print the sharding plan and per-device memory, allocating nothing (any machine):
    sandmle --config=configs/sandmle_qwen3.py:8b --workdir=/tmp/dry --config.dry_run=True
    # A v5p-64 pod (32 chips; tpu/launch.sh starts this on every worker with --multihost):
    sandmle --config=configs/sandmle_qwen3.py:14b --workdir=gs://BUCKET/runs/14b \
        --config.model.hf_path=/ckpt/Qwen3-14B --config.tokenizer.path=/ckpt/Qwen3-14B \
        --config.tasks.dir=/data/envgen912 --multihost
    # One node of 8 GPUs (tensor parallel over the node):
    sandmle --config=configs/sandmle_qwen3.py:8b,gpu --workdir=/runs/8b ...
    # Seed-SFT only (job `sft`), and the PPO variant (GAE with a critic):
    sandmle --config=configs/sandmle_qwen3.py:8b,sft ...
    sandmle --config=configs/sandmle_qwen3.py:8b,ppo ...
    # lr x group size:
    sandmle-sweep configs/sandmle_qwen3.py:8b --workdir=/runs/sweep8b

Args: 8b | 14b | 30b_a3b (model), gpu (8 x H100 80 GB instead of a v5p-64 slice; two such
nodes for 30b_a3b), sft,
ppo, rl_steps=<int>.
"""

import ml_collections

from configs.common import parse_arg

MODELS = {"8b": "qwen3-8b", "14b": "qwen3-14b", "30b_a3b": "qwen3-30b-a3b"}
# Where each run goes: (topology, mesh (data, fsdp, tensor, expert), rows per micro-batch).
# Meshes are those `sandmle-memplan` found to need least memory per device for 16 x 4 rows
# of 32k tokens with flash attention. On GPUs the 30B-A3B's fp32 master weights, AdamW
# moments and gradients alone take about 76 GB per device on one node of 8 x 80 GB, so it
# needs two nodes; the micro-batches leave room to spare (8b 48 GB, 14b 58 GB, 30b_a3b 51 GB
# per device). tests/test_paper_configs.py holds every placement's plan to FITS.
TPU_PLACEMENT = ("v5p-64", (1, 4, 8, 1), 16)
GPU_PLACEMENT = {"8b": ("8xH100-80GB", (1, 1, 8, 1), 2),
                 "14b": ("8xH100-80GB", (1, 1, 8, 1), 1),
                 "30b_a3b": ("16xH100-80GB", (1, 4, 4, 1), 4)}


def get_config(arg=None):
    arg = parse_arg(arg, lazy=True, gpu=False, sft=False, ppo=False, rl_steps=200)
    model = next((k for k in MODELS if k in arg), "8b")
    from sandmle.agent.config import default_config as agent_config, rollout_config
    from sandmle.checkpoint import default_config as checkpoint_config
    from sandmle.rl.config import default_config as rl_config, sft_config
    from sandmle.sampling.config import default_config as sampling_config
    from sandmle.sandbox.config import default_config as farm_config
    from configs import envgen

    topology, mesh_shape, micro_batch = GPU_PLACEMENT[model] if arg.gpu else TPU_PLACEMENT
    config = ml_collections.ConfigDict()
    config.job = "sft" if arg.sft else "train"
    config.seed = 0
    config.log_every = 1
    config.multihost = False        # tpu/launch.sh passes --multihost on pods
    config.dry_run = False
    config.dry_run_topology = topology
    config.mesh = ml_collections.ConfigDict({"shape": mesh_shape})

    config.tasks = ml_collections.ConfigDict({"dir": "", "num_train": 0, "num_validation": 0})
    config.tasks.envgen = envgen.get_config("n=912")
    config.tokenizer = ml_collections.ConfigDict({"path": "", "vocab_size": 151669})
    config.model = ml_collections.ConfigDict()
    config.model.preset = MODELS[model]
    config.model.hf_path = ""  # a local Qwen3 checkpoint directory (required to train)
    config.model.overrides = ml_collections.ConfigDict({
        "dtype": "bfloat16", "param_dtype": "float32", "remat": "full",
        # Pallas flash attention on TPU, cuDNN on GPU: memory linear in the 32k context.
        "attention": "auto"})

    config.agent = agent_config()   # 15 calls, 300 s per execution, 32k context
    config.agent.tools = ("execute_python", "score")   # the paper's Python and Score tools
    config.rollout = rollout_config()
    config.rollout.backend = "engine"
    config.rollout.num_slots = 64

    temperature = ml_collections.FieldReference(1.0)
    config.sampling = sampling_config()
    config.sampling.temperature = temperature
    config.sampling.max_new_tokens = config.agent.get_ref("max_new_tokens")

    config.sft = sft_config()       # lr 1e-5, 200 steps
    config.sft.demos_per_task = 1
    config.sft.bug_rate = 0.15
    config.sft.min_reward = 0.4     # keep demonstrations that produced a valid submission
    config.sft.compute_dtype = "bfloat16"

    config.rl = rl_config()         # group 4, 16 tasks, lr 1e-6, clip 0.2/0.28, no KL
    config.rl.temperature = temperature
    config.rl.steps = arg.rl_steps
    config.rl.ppo_epochs = 1
    config.rl.num_minibatches = 1
    config.rl.micro_batch_size = micro_batch
    config.rl.overlap = True
    config.rl.compute_dtype = "bfloat16"
    if arg.ppo:
        config.rl.algorithm = "ppo"
        config.rl.advantage = "gae"

    config.eval = ml_collections.ConfigDict({"samples_per_task": 1, "every_steps": 20,
                                             "at_start": True, "start_samples_per_task": 1})
    config.checkpoint = checkpoint_config()
    config.checkpoint.every_steps = 10
    config.farm = farm_config()
    config.farm.num_workers = 32
    config.farm.limits.cpu_s = 600.0
    config.farm.limits.memory_bytes = 16 << 30
    config.resume_safe_fields = ("rl.steps", "eval.every_steps", "log_every",
                                 "checkpoint.every_steps", "checkpoint.max_to_keep",
                                 "checkpoint.keep_every", "farm.num_workers", "rl.overlap",
                                 "dry_run")
    return config


def get_sweep(hyper):
    """GRPO learning rate x group size around the paper's values."""
    return hyper.product([
        hyper.sweep("rl.optim.lr", [5e-7, 1e-6, 2e-6]),
        hyper.sweep("rl.group_size", [4, 8]),
    ])
