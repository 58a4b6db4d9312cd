"""Defaults for the `agent` config section: the paper's ReAct limits, tools, context, reward."""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """The `config.agent` section. Paper (SandMLE): at most 15 LLM calls, 300 s per
    execution, a 32k context pruned first of failed tool turns, then of everything but
    system + task + the last 2 messages; Python and Score tools; milestone reward."""
    c = ml_collections.ConfigDict()
    c.max_calls = 15                    # LLM calls per trajectory (the final answer counts)
    c.exec_timeout_s = 300.0            # wall clock of one execute_python call
    c.trajectory_timeout_s = 3600.0     # wall clock of a whole trajectory (0: none)
    c.max_new_tokens = 4096             # per assistant turn
    c.max_context_tokens = 32768        # what the model may see at once
    c.description_max_tokens = 6144     # the task's description.md is cut head + tail past this
    c.observation_max_tokens = 1024     # each tool observation is cut head + tail past this
    c.tools = ("execute_python", "validate", "score")  # 'score' is the paper's training tool
    c.enable_thinking = True
    # Execution time in observations. Exact-resume tests switch it off: wall times differ
    # from run to run, and the policy would see (and sample from) different text.
    c.show_seconds = True
    c.reward = "milestone"              # see sandmle.agent.rewards.REWARDS
    c.drop_timeouts = False             # the paper drops timed-out trajectories from the loss
    # Trajectory workdirs live under <run workdir>/<workdir_name>/; kept after grading
    # only when keep_workdirs (debugging), since they can hold large generated files.
    c.workdir_name = "trajectories"
    c.keep_workdirs = False
    return c


def rollout_config() -> ml_collections.ConfigDict:
    """The `config.rollout` section: how trajectories are batched through the sampler."""
    c = ml_collections.ConfigDict()
    # 'async': a row samples its next turn as soon as its tool result is in, while other
    # rows' code runs (farm and sampler busy at once). 'sync': every round waits for all
    # running tools, so batch composition (and with fixed seeds, every token) is
    # reproducible run to run.
    c.mode = "async"
    c.gather_s = 0.05                   # async: wait this long for more rows before sampling
    c.min_ready_fraction = 0.5          # ... unless this fraction of live rows is ready
    return c
