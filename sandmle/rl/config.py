"""Defaults for the `rl` and `sft` config sections (paper values where it gives them)."""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """The `config.rl` section. Paper (SandMLE, arXiv 2604.04872): group 4, 16 tasks per
    step, lr 1e-6, clip 0.2 / 0.28, no KL, seq-mean-token-mean, temperature 1.0."""
    c = ml_collections.ConfigDict()
    c.algorithm = "grpo"               # grpo | ppo (ppo trains a critic too)
    c.steps = 100                      # RL steps of the train job
    c.ppo_epochs = 1                   # passes over each step's batch
    c.num_minibatches = 1              # optimizer updates per pass
    c.overlap = False                  # rollouts of step t+1 while step t updates
    c.advantage = "grpo"               # see sandmle.rl.advantages.ADVANTAGES
    c.std_normalize = True             # grpo: divide by the group std
    c.gamma = 1.0                      # gae
    c.lam = 0.95                       # gae
    c.whiten_advantages = True         # gae
    c.group_size = 4
    c.tasks_per_step = 16
    c.temperature = 1.0                # must match the sampler's (logprob ratios)
    c.logprob_chunk = 512              # time steps per chunked vocabulary projection
    c.policy_loss = "ppo_clip"         # see sandmle.rl.losses.POLICY_LOSSES
    c.clip_low = 0.2
    c.clip_high = 0.28
    c.dual_clip = ml_collections.FieldReference(None, field_type=float)  # e.g. 3.0
    c.loss_agg = "seq-mean-token-mean"  # token-mean | seq-mean-token-sum-norm
    c.loss_agg_norm_len = ml_collections.FieldReference(None, field_type=int)
    c.kl_coef = 0.0                    # 0: no KL term and no reference forward pass
    c.kl_estimator = "k3"              # k1 | k2 | k3
    c.entropy_coef = 0.0
    c.value_coef = 0.5                 # ppo
    c.value_clip = 0.2                 # ppo; None: unclipped
    c.router_aux_coef = 0.0            # MoE load balancing (the model returns the loss)
    c.optim = optimizer_config(lr=1e-6)
    c.critic_lr = 1e-5                 # ppo critic
    c.micro_batch_size = 0             # 0: the whole batch at once
    c.seq_multiple = 256               # learner rows are padded to a multiple of this
    c.compute_dtype = "float32"        # bfloat16: bf16 compute over fp32 master weights
    c.param_dtype = "float32"
    return c


def optimizer_config(lr: float) -> ml_collections.ConfigDict:
    """AdamW with warmup and a decay schedule, and global-norm clipping."""
    o = ml_collections.ConfigDict()
    o.lr = lr
    o.schedule = "constant"            # constant | cosine | linear (after warmup)
    o.warmup_steps = 0
    o.total_steps = 1000               # horizon of cosine / linear decay
    o.end_lr_factor = 0.0              # decay to lr * end_lr_factor
    o.b1 = 0.9
    o.b2 = 0.999
    o.eps = 1e-8
    o.weight_decay = 0.0
    o.grad_clip_norm = 1.0             # None or 0: no clipping
    return o


def sft_config() -> ml_collections.ConfigDict:
    """The `config.sft` section: the paper's Seed-SFT warm start (lr 1e-5, 200 steps)."""
    c = ml_collections.ConfigDict()
    c.optim = optimizer_config(lr=1e-5)
    c.steps = 200
    c.batch_size = 16
    c.micro_batch_size = 0
    c.compute_dtype = "float32"
    c.param_dtype = "float32"
    c.loss_agg = "token-mean"
    c.logprob_chunk = 512
    c.demos_per_task = 1               # expert trajectories per train task
    c.bug_rate = 0.15                  # demonstrations with a planted bug (fixed next turn)
    c.thorough_rate = 0.6              # demonstrations that inspect, validate and score
    c.min_reward = 0.0                 # keep demonstrations with at least this reward
    c.max_seq_len = 0                  # longer demonstration rows are left out (0: none)
    return c
