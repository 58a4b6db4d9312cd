"""Multi-turn agent rollouts: the continuous engine against lock-step `Sampler.extend`.

    python benchmarks/agent_sampler_bench.py                 # 64 conversations, 3-8 turns
    python benchmarks/agent_sampler_bench.py --conversations=4 --max_turns=3 --max_obs=96 \
        --max_gen=16 --max_latency=0.1                       # a quick look

The workload is a script drawn once (`--seed`) and replayed by both drivers on the tiny
Qwen3 (random weights) on CPU: `--conversations` conversations of `--min_turns` ..
`--max_turns` assistant turns; a prompt of `--prompt_len` tokens; each turn samples a
fixed number of tokens (uniform in [`--min_gen`, `--max_gen`], no stop ids, so both
drivers sample exactly the same number); after every turn but the last a tool runs for a
random time (uniform in [`--min_latency`, `--max_latency`] seconds) and returns an
observation of uniform [`--min_obs`, `--max_obs`] random tokens.

  lock-step:  `Sampler.generate` for every first turn, then per round: wait for every live
              row's tool (the slowest of them), then one `Sampler.extend` with the
              observations (None for conversations that are done). What an agent rollout
              on generate/extend does.
  continuous: `Engine.add` for every prompt; a loop calls `engine.step()`; a finished turn
              starts its tool (a timer) and, when that returns, its continuation is added,
              while other rows keep decoding; a done conversation is released.

Each driver runs the script untimed until a run compiles nothing, in the calls or in the
background (at most `--warmups` runs; the shapes an engine meets depend on when tools
return), then waits for its background compiles. Then `--repeats` timed runs of each,
interleaved (lock-step, continuous, lock-step, ...), and each driver's shortest makespan
is compared (a shared machine's load comes and goes; every run's makespan is printed
too). Printed side by side: makespan (first request to last token), generated tokens per second of
makespan, time spent waiting on tools with nothing to decode, prefill tokens and the
seconds of the prefill calls, decode steps and the seconds of the decode calls, and
the programs compiled during the timed run, in the calls (stalling every row) and in the
continuous engine's background thread; then the ratios.
"""

from __future__ import annotations

import os
import sys

# Run as `python <dir>/<name>.py` from a checkout: the repo root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses
import heapq
import time

from absl import flags

from sandmle import cli

_CONVS = flags.DEFINE_integer("conversations", 64, "Conversations (= engine slots).", lower_bound=1)
_MIN_TURNS = flags.DEFINE_integer("min_turns", 3, "Fewest assistant turns.", lower_bound=1)
_MAX_TURNS = flags.DEFINE_integer("max_turns", 8, "Most assistant turns.", lower_bound=1)
_PROMPT = flags.DEFINE_integer("prompt_len", 256, "Prompt tokens.", lower_bound=1)
_MIN_OBS = flags.DEFINE_integer("min_obs", 64, "Shortest tool observation (tokens).", lower_bound=1)
_MAX_OBS = flags.DEFINE_integer("max_obs", 1024, "Longest tool observation (tokens).",
                                lower_bound=1)
_MIN_GEN = flags.DEFINE_integer("min_gen", 16, "Fewest tokens a turn samples.", lower_bound=1)
_MAX_GEN = flags.DEFINE_integer("max_gen", 128, "Most tokens a turn samples.", lower_bound=1)
_MIN_LAT = flags.DEFINE_float("min_latency", 0.1, "Shortest tool run (s).", lower_bound=0)
_MAX_LAT = flags.DEFINE_float("max_latency", 2.0, "Longest tool run (s).", lower_bound=0)
_DECODE_STEPS = flags.DEFINE_integer("decode_steps", 16, "Engine tokens per step.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Script seed.")
_WARMUPS = flags.DEFINE_integer("warmups", 6, "Most untimed runs of each driver.",
                                lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs of each driver, interleaved "
                                "(the shortest makespan of each is compared).", lower_bound=1)


@dataclasses.dataclass
class Script:
    prompts: list        # [conv] prompt ids
    gens: list           # [conv][turn] tokens to sample
    obs: list            # [conv][turn] observation ids after that turn (not after the last)
    latency: list        # [conv][turn] seconds the tool after that turn runs


def make_script(n, min_turns, max_turns, prompt_len, min_obs, max_obs, min_gen, max_gen,
                min_lat, max_lat, vocab, seed) -> Script:
    import numpy as np
    rng = np.random.default_rng(seed)
    s = Script([], [], [], [])
    for _ in range(n):
        turns = int(rng.integers(min_turns, max_turns + 1))
        s.prompts.append(rng.integers(0, vocab, prompt_len).tolist())
        s.gens.append(rng.integers(min_gen, max_gen + 1, turns).tolist())
        s.obs.append([rng.integers(0, vocab, int(rng.integers(min_obs, max_obs + 1))).tolist()
                      for _ in range(turns - 1)])
        s.latency.append(rng.uniform(min_lat, max_lat, turns - 1).tolist())
    return s


def longest(script: Script) -> int:
    return max(len(p) + sum(g) + sum(map(len, o))
               for p, g, o in zip(script.prompts, script.gens, script.obs))


def run_lockstep(sampler, script: Script) -> dict:
    """generate, then one extend per round after the slowest live tool returns."""
    import numpy as np
    from sandmle.sampling import compiles
    n = len(script.prompts)
    c0 = compiles.counts()
    t0 = time.perf_counter()
    waited = 0.0
    gen = sampler.generate(script.prompts, max_new_tokens=[g[0] for g in script.gens], seed=0)
    tokens = int(gen.lengths.sum())
    for r in range(1, max(map(len, script.gens))):
        live = [i for i in range(n) if len(script.gens[i]) > r]
        if not live:
            break
        slowest = max(script.latency[i][r - 1] for i in live)
        w0 = time.perf_counter()
        time.sleep(slowest)           # every live row's tool ran in parallel
        waited += time.perf_counter() - w0
        appended = [script.obs[i][r - 1] if i in live else None for i in range(n)]
        max_new = [script.gens[i][r] if i in live else 1 for i in range(n)]
        gen = sampler.extend(gen.state, appended, max_new_tokens=max_new, seed=r)
        tokens += int(gen.lengths.sum())
    makespan = time.perf_counter() - t0
    stats = gen.state.engine.stats
    assert tokens == int(np.sum([sum(g) for g in script.gens]))
    return {"makespan": makespan, "tokens": tokens, "tool_wait": waited,
            "prefill_tokens": stats["prefill_tokens"], "decode_steps": stats["decode_steps"],
            "prefill_s": stats["prefill_s"], "decode_s": stats["decode_s"],
            **_compiled_since(c0)}


def _compiled_since(c0: dict) -> dict:
    from sandmle.sampling import compiles
    c = compiles.counts()
    return {"compiles": c["foreground"] - c0["foreground"],
            "compiles_bg": c["background"] - c0["background"]}


def run_continuous(engine, script: Script) -> dict:
    """Every conversation moves on as soon as its own tool returns."""
    from sandmle.sampling import Request, compiles
    n = len(script.prompts)
    c0 = compiles.counts()
    stats0 = dict(engine.stats)
    t0 = time.perf_counter()
    waited = 0.0
    turn_of: dict[int, int] = {}
    conv_of: dict[int, int] = {}
    for i in range(n):
        h = engine.add(Request(script.prompts[i], max_new_tokens=script.gens[i][0], seed=i))
        turn_of[h], conv_of[h] = 0, i
    tools: list[tuple[float, int]] = []   # (ready time, handle)
    tokens, open_convs = 0, n
    while open_convs:
        now = time.perf_counter()
        while tools and tools[0][0] <= now:
            _, h = heapq.heappop(tools)
            i, k = conv_of[h], turn_of[h]
            engine.add(Request(script.obs[i][k - 1], max_new_tokens=script.gens[i][k],
                               conversation=h, seed=1000 * k + i))
        if not engine.busy:
            w0 = time.perf_counter()
            time.sleep(max(0.0, tools[0][0] - w0))   # nothing to decode: wait for a tool
            waited += time.perf_counter() - w0
            continue
        for turn in engine.step():
            tokens += len(turn.tokens)
            h = turn.handle
            i, k = conv_of[h], turn_of[h]
            if k + 1 < len(script.gens[i]):
                turn_of[h] = k + 1
                heapq.heappush(tools, (time.perf_counter() + script.latency[i][k], h))
            else:
                engine.release(h)
                open_convs -= 1
    makespan = time.perf_counter() - t0
    assert tokens == sum(sum(g) for g in script.gens)
    return {"makespan": makespan, "tokens": tokens, "tool_wait": waited,
            "prefill_tokens": engine.stats["prefill_tokens"] - stats0["prefill_tokens"],
            "decode_steps": engine.stats["decode_steps"] - stats0["decode_steps"],
            "prefill_s": engine.stats["prefill_s"] - stats0["prefill_s"],
            "decode_s": engine.stats["decode_s"] - stats0["decode_s"],
            **_compiled_since(c0)}


def main(argv):
    del argv
    import jax
    from flax import nnx

    from sandmle.models import qwen3
    from sandmle.sampling import Engine, Sampler
    from sandmle.sampling.engine import wait_compiles

    cfg = qwen3.get_preset("tiny")
    model = qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))
    script = make_script(_CONVS.value, _MIN_TURNS.value, _MAX_TURNS.value, _PROMPT.value,
                         _MIN_OBS.value, _MAX_OBS.value, _MIN_GEN.value, _MAX_GEN.value,
                         _MIN_LAT.value, _MAX_LAT.value, cfg.vocab_size, _SEED.value)
    sampler = Sampler(model, stop_token_ids=())
    compiled: dict = {}

    def engine():
        return Engine(model, num_slots=len(script.prompts), max_seq_len=longest(script) + 1,
                      stop_token_ids=(), decode_steps=_DECODE_STEPS.value, compiled=compiled)

    def warm_up(run) -> int:
        for n in range(1, _WARMUPS.value + 1):
            r = run()
            if r["compiles"] == r["compiles_bg"] == 0:
                break
        wait_compiles()
        return n

    warm = (warm_up(lambda: run_lockstep(sampler, script)),
            warm_up(lambda: run_continuous(engine(), script)))
    runs: dict[str, list[dict]] = {"lock-step": [], "continuous": []}
    for _ in range(_REPEATS.value):
        runs["lock-step"].append(run_lockstep(sampler, script))
        runs["continuous"].append(run_continuous(engine(), script))
    lock, cont = (min(runs[k], key=lambda r: r["makespan"]) for k in runs)
    n_turns = sum(map(len, script.gens))
    params = qwen3.count_params(cfg)["total"]
    print(f"device: {jax.devices()[0].device_kind}; tiny Qwen3 ({params:,} params), "
          f"{len(script.prompts)} conversations, {n_turns} turns, "
          f"{sum(sum(g) for g in script.gens)} sampled tokens, observations "
          f"{_MIN_OBS.value}-{_MAX_OBS.value} tokens, tool latency "
          f"{_MIN_LAT.value}-{_MAX_LAT.value} s; warm-up runs: lock-step {warm[0]}, "
          f"continuous {warm[1]}")
    each = "; ".join(f"{k} " + ", ".join(f"{r['makespan']:.2f}" for r in v)
                     for k, v in runs.items())
    print(f"timed makespans s: {each} (the shortest of each below)")
    print(f"{'driver':<12} {'makespan s':>10} {'tokens/s':>9} {'tool wait s':>11} "
          f"{'prefill tok':>11} {'prefill s':>9} {'decode steps':>12} {'decode s':>8} "
          f"{'compiles':>8} {'in background':>13}")
    for name, r in (("lock-step", lock), ("continuous", cont)):
        print(f"{name:<12} {r['makespan']:>10.2f} {r['tokens'] / r['makespan']:>9.0f} "
              f"{r['tool_wait']:>11.2f} {r['prefill_tokens']:>11} {r['prefill_s']:>9.2f} "
              f"{r['decode_steps']:>12} {r['decode_s']:>8.2f} {r['compiles']:>8} "
              f"{r['compiles_bg']:>13}")
    speed = (cont["tokens"] / cont["makespan"]) / (lock["tokens"] / lock["makespan"])
    print(f"continuous / lock-step: tokens/s {speed:.2f}x (goal >= 1.5x), makespan "
          f"{cont['makespan'] / lock['makespan']:.2f} of lock-step's (goal < 1)")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
