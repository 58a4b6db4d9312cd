"""Rollouts end to end through the farm: the expert, a tiny random policy, hostile turns."""

from __future__ import annotations

import os

import numpy as np
import psutil
import pytest

import agent_helpers as H
from sandmle.agent import expert, rewards
from sandmle.agent.policy import EnginePolicy, LockstepPolicy
from sandmle.agent.rollout import Rollouts, TaskRef
from sandmle.agent.trajectory import to_batch
from sandmle.sandbox import SandboxFarm

# One worker runs this module: its module fixtures are built once (pytest.ini).
pytestmark = pytest.mark.xdist_group("agent_rollout")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("agent")


@pytest.fixture(scope="module")
def tasks(root):
    return [H.make_task(root / "tasks", f"t-{k}", k, seed=i)
            for i, k in enumerate(("binary", "multiclass", "regression"))]


@pytest.fixture(scope="module")
def tok(root):
    return H.tokenizer(str(root))


@pytest.fixture(scope="module")
def farm():
    with SandboxFarm(H.farm_config()) as f:
        yield f


def _messages(rollouts, traj, task_dir):
    """The conversation as messages, rebuilt from the trajectory's text."""
    desc = (open(os.path.join(task_dir, "public", "description.md")).read())
    msgs = [{"role": "system", "content": rollouts.system}, {"role": "user", "content": desc}]
    for t in traj.turns:
        msgs.append({"role": "assistant", "content": t.text.removesuffix("<|im_end|>")})
        if t.observation is not None and t.observation_span is not None:
            msgs.append({"role": "tool", "content": t.observation})
    return msgs


def test_expert_solves_tasks_through_the_tools(root, tasks, tok, farm):
    cfg = H.agent_config(max_calls=8, max_new_tokens=4096, max_context_tokens=32768,
                         tools=("execute_python", "validate", "score"))
    pol = expert.ExpertPolicy(tok, tools=cfg.tools, seed=3, bug_rate=0.5)
    rollouts = Rollouts(pol, tok, farm, cfg)
    refs = [TaskRef(t, g, s) for g, t in enumerate(tasks) for s in range(3)]
    work = root / "expert_runs"
    batch = rollouts.run(refs, work, seed=0)
    for traj in batch.trajectories:
        assert traj.termination == "answer", (traj.traj_id, traj.turns[-1].observation)
        assert traj.report["valid_submission"], traj.report["reason"]
        assert traj.reward >= 0.4 and traj.reward_parts["format"] == pytest.approx(0.1)
        # Token exactness: the one segment is exactly the chat template's rendering of the
        # conversation (prompt, canonical assistant turns, tool responses), and the loss
        # mask covers exactly the assistant turns.
        (seg,) = traj.segments
        msgs = _messages(rollouts, traj, traj.task_dir)
        rendered = tok.render(msgs, rollouts.schemas, add_generation_prompt=False)
        assert seg.tokens == rendered.ids[:len(seg.tokens)]
        assert len(rendered.ids) - len(seg.tokens) == 1   # the final newline nobody samples
        assert seg.loss_mask == rendered.assistant_mask[:len(seg.tokens)]
    assert not os.listdir(work), "trajectory workdirs are freed after grading"
    assert batch.stats["calls_execute_python"] >= len(refs)
    assert batch.stats["end_answer"] == len(refs)


def _tiny_policy(tok, seed=0, backend="lockstep", attention="xla"):
    from sandmle.sampling import Sampler, SamplingParams
    model = H.tiny_model(tok.vocab_size, seed=seed, attention=attention)
    if backend == "engine":
        from sandmle.sampling.engine import Engine
        engine = Engine(model, tokenizer=tok, num_slots=4, max_seq_len=4096,
                        sampling=SamplingParams(temperature=1.0))
        return model, EnginePolicy(engine)
    # One cache length and one chunk bucket for the whole rollout (prompt, 4 turns and their
    # observations), so the lock-step sampler compiles one generate and one extend program.
    sampler = Sampler(model, tokenizer=tok, cache_multiple=4096, min_chunk=512)
    return model, LockstepPolicy(sampler, SamplingParams(temperature=1.0), seed=seed)


def test_random_policy_and_hostile_turns_are_handled_and_counted(root, tasks, tok, farm):
    model, pol = _tiny_policy(tok)
    cfg = H.agent_config(exec_timeout_s=2.0)
    private = os.path.join(tasks[0], "private", "answers.csv")
    copy = ("import shutil; shutil.copy('input/sample_submission.csv', 'submission.csv'); "
            "print('copied')")
    answer = "<think>\ndone\n</think>\n\nDone."
    n_random = 16
    scripts = {
        n_random + 0: [H.tool_call("while True: pass"), answer],                # exec timeout
        n_random + 1: [H.tool_call("print(1)")],                                # call limit
        n_random + 2: ["<think>\nhmm\n</think>\n\n", H.tool_call(copy), answer],  # empty turn
        n_random + 3: ['<think>\nx\n</think>\n\n<tool_call>\n{"name": "execute_python", '
                       '"arguments": {"code": }\n</tool_call>', answer],        # malformed
        n_random + 4: [H.tool_call(f"print(open({private!r}).read())"),          # private/
                       H.tool_call("print(open('../' + sorted(__import__('os').listdir('..'))[0]"
                                   " + '/submission.csv').read())"),           # sibling
                       H.tool_call(copy), answer],
    }
    scripted = H.ScriptedPolicy(tok, scripts)
    policy = H.RoutedPolicy(pol, {r: scripted for r in scripts})
    rollouts = Rollouts(policy, tok, farm, cfg)
    refs = [TaskRef(tasks[i % 3], i // 4, i % 4) for i in range(n_random)]
    refs += [TaskRef(tasks[0], 100 + r, 0) for r in range(len(scripts))]
    work = root / "random_runs"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    batch = rollouts.run(refs, work, seed=1)
    trajs, stats = batch.trajectories, batch.stats
    assert all(t.termination and t.report is not None for t in trajs)
    by = {r: trajs[r] for r in scripts}
    assert by[n_random + 0].turns[0].tool_status == "timeout" and stats["exec_timeouts"] >= 1
    assert by[n_random + 1].termination == "max_turns"
    assert len(by[n_random + 1].turns) == cfg.max_calls
    assert "empty turn" in by[n_random + 2].turns[0].observation and stats["empty_turns"] >= 1
    assert "not valid JSON" in by[n_random + 3].turns[0].observation
    hostile = by[n_random + 4]
    assert hostile.turns[0].tool_status != "ok" and "SECRET" not in hostile.turns[0].observation
    assert hostile.turns[1].tool_status != "ok", hostile.turns[1].observation
    assert hostile.report["valid_submission"] and hostile.termination == "answer"
    assert stats["malformed_turns"] >= n_random  # random text never makes a valid call
    assert stats["end_max_turns"] >= 1
    assert sum(stats.get(f"end_{k}", 0) for k in ("answer", "max_turns", "timeout", "context",
                                                  "error")) == len(refs)
    assert not os.listdir(work)
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert len(after) <= len(before), "a job process outlived its trajectory"
    for t in trajs:
        r, parts = rewards.compute(cfg.reward, t, t.report)
        assert r == pytest.approx(t.reward)


def test_context_overflow_prunes_then_ends(root, tasks, tok, farm):
    probe = Rollouts(H.ScriptedPolicy(tok, {}), tok, farm, H.agent_config())
    prompt_len = len(probe.prompt_ids(tasks[0]))
    big = H.tool_call("print('x' * 20000)")
    small = H.tool_call("print(1)")
    fail = H.tool_call("1/0")
    # Room for the prompt, one turn and ~150 more tokens: a 256-token observation overflows.
    cfg = H.agent_config(max_context_tokens=prompt_len + 64 + 150, max_calls=6)
    scripts = {0: [big], 1: [fail, small, small, small]}
    rollouts = Rollouts(H.ScriptedPolicy(tok, scripts), tok, farm, cfg)
    batch = rollouts.run([TaskRef(tasks[0], 0, 0), TaskRef(tasks[0], 1, 0)], root / "ctx", seed=0)
    over, pruned = batch.trajectories
    assert over.termination == "context" and batch.stats["end_context"] == 1
    assert len(over.turns) == 1 and over.segments[0].loss_mask.count(1) > 0
    # Row 1 keeps going by pruning: a new segment per pruning, starting with the prompt and
    # holding only kept turns' ids; what was sampled stays where it was sampled.
    assert batch.stats["prunes"] >= 1 and len(pruned.segments) >= 2
    first = pruned.segments[0]
    for seg in pruned.segments[1:]:
        assert seg.tokens[:pruned.prompt_len] == first.tokens[:pruned.prompt_len]
    later = [t for t in pruned.turns if t.segment > 0]
    assert later and all(0 not in t.context for t in later), "the failed turn 0 was dropped"
    assert sum(sum(s.loss_mask) for s in pruned.segments) == sum(
        b - a for a, b in (t.sampled for t in pruned.turns))


@pytest.mark.parametrize("backend,attention", [("lockstep", "xla"), ("engine", "xla"),
                                               ("engine", "chunked")])
def test_policy_tokens_and_logprobs_are_exactly_what_the_learner_scores(root, tasks, tok, farm,
                                                                        backend, attention):
    """Tiny random policy over several turns (lock-step Sampler rounds, or the
    continuous-batching Engine with rows joining and leaving): to_batch holds the sampled
    ids plus the appended observation ids, the mask is exactly the sampled ids, and the
    learner's logprobs of the batch equal the sampler's within 1e-4 (fp32)."""
    from sandmle.rl import config as rl_config
    from sandmle.rl.learner import Learner
    from sandmle import parallel
    import jax

    model, pol = _tiny_policy(tok, seed=5, backend=backend, attention=attention)
    cfg = H.agent_config(max_calls=3, max_new_tokens=48)
    rollouts = Rollouts(pol, tok, farm, cfg)
    refs = [TaskRef(tasks[i % 2], i // 2, i % 2) for i in range(4)]
    batch = rollouts.run(refs, root / f"exact_runs_{backend}_{attention}", seed=2)
    trajs = batch.trajectories
    for traj in trajs:
        assert len(traj.segments) == 1
        seg = traj.segments[0]
        pos = traj.prompt_len
        for t in traj.turns:
            a, b = t.sampled
            assert a == pos and all(m == 1 for m in seg.loss_mask[a:b])
            pos = b + (1 if t.closed else 0)
            if t.observation_span is not None:
                oa, ob = t.observation_span
                assert oa == pos
                assert seg.tokens[oa:ob] == tok.tool_responses_ids([t.observation])
                pos = ob
        assert pos == len(seg) and sum(seg.loss_mask) == sum(b - a for a, b in
                                                              (t.sampled for t in traj.turns))
    assert sum(len(t.turns) for t in trajs) > len(trajs), "want multi-turn trajectories"
    rl = rl_config.default_config()
    mesh = parallel.make_mesh((1, 1, 1, 1), jax.devices()[:1])
    learner = Learner(model, rl, mesh)
    state = learner.init_state()
    b = to_batch(trajs, pad_to=None)
    lp = np.asarray(learner.forward(state.params, state.extra, b)["logprobs"])
    on = b["loss_mask"] > 0
    assert on.sum() > 100
    np.testing.assert_allclose(lp[on], b["old_logprobs"][on], atol=1e-4)
