"""The continuous-batching engine: the RL contract (tokens as sampled, logprobs equal to a
fresh forward of the whole conversation) with rows joining, pausing, being evicted and
leaving at different times; per-request stops and seeds; explicit parameters; errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sandmle.models import kv_cache, qwen3
from sandmle.sampling import Engine, Request, SamplingParams


@pytest.fixture(scope="module")
def model():
    cfg = qwen3.get_preset("tiny", initializer_range=0.2)
    return qwen3.Qwen3(cfg, rngs=nnx.Rngs(4))


# Compiled programs shared by this module's engines (same model graph; the key holds the
# sampling settings and shapes), so each shape compiles once for all the tests.
COMPILED: dict = {}


@nnx.jit
def _logprobs(m, seq):
    logits, _ = m(seq, jnp.arange(seq.shape[1])[None])
    return jax.nn.log_softmax(logits[0], axis=-1)


def fresh_logprobs(model, seq):
    """log p(seq[i] | seq[:i]) for every i >= 1, from one uncached forward."""
    lp = np.asarray(_logprobs(model, jnp.asarray([seq], jnp.int32)))
    return lp[np.arange(len(seq) - 1), np.asarray(seq[1:])]


def test_multi_turn_logprobs_equal_a_fresh_forward_with_rows_joining_and_leaving(model):
    """Seven conversations of 1-4 turns share three slots. Tool responses arrive after a
    random number of steps, so rows join and leave at different times, wait in the queue,
    and idle conversations are evicted (their next turn re-prefills the history)."""
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    sp = SamplingParams(temperature=0.8, top_k=200)
    engine = Engine(model, num_slots=3, sampling=sp, stop_token_ids=(), decode_steps=5,
                    cache_multiple=32)
    n_conv = 7
    turns_left = rng.integers(1, 5, n_conv)
    convs: dict[int, dict] = {}
    for i in range(n_conv):
        prompt = rng.integers(0, vocab, rng.integers(3, 16)).tolist()
        h = engine.add(Request(prompt, max_new_tokens=int(rng.integers(2, 12)), seed=i))
        convs[h] = {"seq": list(prompt), "turns": [], "left": int(turns_left[i]) - 1}
    waiting: list[tuple[int, int]] = []   # (steps until the tool answers, handle)
    released = 0
    while engine.busy or waiting:
        for turn in engine.step():
            c = convs[turn.handle]
            assert turn.finish_reason == "length"
            assert len(turn.tokens) == len(turn.logprobs) == len(turn.sampling_logprobs)
            c["turns"].append((len(c["seq"]), turn))
            c["seq"] += turn.tokens.tolist()
            if c["left"]:
                waiting.append((int(rng.integers(0, 4)), turn.handle))
            else:
                engine.release(turn.handle)
                released += 1
        still = []
        for delay, h in waiting:
            if delay:
                still.append((delay - 1, h))
                continue
            tool = rng.integers(0, vocab, rng.integers(1, 14)).tolist()
            convs[h]["seq"] += tool
            convs[h]["left"] -= 1
            engine.add(Request(tool, max_new_tokens=int(rng.integers(1, 12)), conversation=h,
                               seed=int(rng.integers(1000))))
        waiting = still
    assert released == n_conv and engine.num_free_slots == 3
    assert engine.stats["evictions"] > 0 and engine.stats["resizes"] > 0
    n_turns, gaps = 0, []
    for h, c in convs.items():
        assert engine_history_free(engine, h)
        ref = fresh_logprobs(model, c["seq"])
        for start, turn in c["turns"]:
            n = len(turn.tokens)
            np.testing.assert_array_equal(c["seq"][start:start + n], turn.tokens)
            np.testing.assert_allclose(turn.logprobs, ref[start - 1:start - 1 + n], atol=1e-4)
            gaps.append(np.abs(turn.sampling_logprobs - turn.logprobs))
            n_turns += 1
    assert n_turns == turns_left.sum()
    # Temperature 0.8 and top-k: the sampling logprobs are of another distribution.
    assert np.concatenate(gaps).max() > 0.01


def engine_history_free(engine, handle):
    with pytest.raises(KeyError):
        engine.conversation(handle)
    return True


def test_rows_do_not_depend_on_their_neighbours(model):
    """A request's draws depend on its seed and tokens only, not on who shares the batch."""
    prompt = [5, 6, 7, 8]
    alone = Engine(model, num_slots=4, stop_token_ids=(), compiled=COMPILED)
    alone.add(Request(prompt, max_new_tokens=20, seed=3))
    ref = _drain(alone)[0]
    crowd = Engine(model, num_slots=4, stop_token_ids=(), compiled=COMPILED)
    for seed in (1, 2):
        crowd.add(Request([9, 9, 9, 1, 2], max_new_tokens=7, seed=seed))
    crowd.step()  # The others are mid-turn when the request joins.
    h = crowd.add(Request(prompt, max_new_tokens=20, seed=3))
    got = [t for t in _drain(crowd) if t.handle == h][0]
    np.testing.assert_array_equal(got.tokens, ref.tokens)
    np.testing.assert_allclose(got.logprobs, ref.logprobs, atol=1e-5)


def test_a_new_shape_runs_on_a_larger_compiled_one_while_its_own_compiles(model):
    """A prefill (rows x chunk) or decode (rows) shape with no program runs on a compiled
    shape with at most `_REUSE_WORK` x the work: the same tokens and logprobs as its own
    shape, no compile in the call. From its `_COMPILE_AFTER`th call its own program compiles
    in the background, and once ready the calls use it without tracing again."""
    from sandmle.sampling import compiles
    from sandmle.sampling import engine as engine_lib
    compiled = {"num_traces": 0}
    engine = Engine(model, num_slots=4, max_seq_len=64, stop_token_ids=(), compiled=compiled)
    for seed in (1, 2):                      # compiles the (2 rows, 48 tokens) prefill
        engine.add(Request(list(range(1, 41)), max_new_tokens=3, seed=seed))
    _drain(engine)                           # and the decode of two rows
    exact = Engine(model, num_slots=4, max_seq_len=64, stop_token_ids=())
    prompt = list(range(3, 33))              # 1 row of 30 tokens: its own shape is (1, 32)
    exact.add(Request(prompt, max_new_tokens=6, seed=7))
    want = _drain(exact)[0]

    def turn():
        engine.add(Request(prompt, max_new_tokens=6, seed=7))
        got = _drain(engine)[0]
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)

    start = compiles.counts()["foreground"]
    for i in range(engine_lib._COMPILE_AFTER):
        before = dict(engine.stats)
        turn()
        assert engine.stats["prefill_reused"] == before["prefill_reused"] + 1, i
        assert engine.stats["decode_reused"] == before["decode_reused"] + 1, i
    assert engine.stats["background_compiles"] == 2        # (1, 32) prefill, 1-row decode
    engine_lib.wait_compiles()
    assert compiles.counts()["foreground"] == start      # nothing compiled in the calls
    before = dict(engine.stats)
    turn()
    assert engine.stats["prefill_reused"] == before["prefill_reused"]
    assert engine.stats["decode_reused"] == before["decode_reused"]
    # The background compiled exactly the programs the calls then look up.
    assert compiles.counts()["foreground"] == start


def _drain(engine):
    out = []
    while engine.busy:
        out += engine.step()
    return out


def test_per_request_stops_and_budgets(model):
    vocab = model.config.vocab_size
    pieces = [bytes([97 + i % 26]) * (1 + i // 26) for i in range(vocab)]  # 'a', 'b', ..
    free = Engine(model, num_slots=4, stop_token_ids=(), compiled=COMPILED)
    for seed in range(4):
        free.add(Request([1, 2, 3], max_new_tokens=40, seed=seed))
    ref = {t.handle: t for t in _drain(free)}
    # Stop at a token each free-running row sampled: row 0 by id, row 1 by string (its
    # text), row 2 both ways, row 3 with no stops and a shorter budget.
    targets = {h: int(ref[h].tokens[5]) for h in ref}
    engine = Engine(model, num_slots=4, stop_token_ids=(), token_bytes=pieces,
                    compiled=COMPILED)
    specs = [dict(stop_token_ids=[targets[0]]),
             dict(stop_strings=[pieces[targets[1]].decode()]),
             dict(stop_token_ids=[targets[2]], stop_strings=[pieces[targets[2]].decode()]),
             dict(max_new_tokens=9)]
    for seed, spec in enumerate(specs):
        engine.add(Request([1, 2, 3], **{"max_new_tokens": 40, "seed": seed, **spec}))
    got = {t.handle: t for t in _drain(engine)}
    for h in range(3):
        seq = ref[h].tokens.tolist()
        text = b""
        for n, tok in enumerate(seq, 1):   # A string may also complete across tokens.
            text += pieces[tok]
            if (h != 1 and tok == targets[h]) or (h != 0 and pieces[targets[h]] in text):
                break
        assert got[h].finish_reason == "stop" and got[h].tokens.tolist() == seq[:n], h
    assert got[3].finish_reason == "length" and got[3].tokens.tolist() == ref[3].tokens[:9].tolist()


def test_set_params_takes_a_learners_pure_dict(model):
    other = qwen3.Qwen3(model.config, rngs=nnx.Rngs(11))
    greedy = SamplingParams(greedy=True)
    want = Engine(other, num_slots=2, sampling=greedy, stop_token_ids=())
    engine = Engine(nnx.graphdef(model), config=model.config, num_slots=2, sampling=greedy,
                    stop_token_ids=())
    with pytest.raises(ValueError, match="set_params"):
        engine.add(Request([1, 2], max_new_tokens=3))
        engine.step()
    engine.release(0)
    pure = nnx.to_pure_dict(nnx.state(other, nnx.Param))   # what a learner holds
    engine.set_params(pure)
    for e in (want, engine):
        e.add(Request([1, 2, 3], max_new_tokens=6))
    a, b = _drain(want)[0], _drain(engine)[0]
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-6)


def test_bookkeeping_and_errors(model):
    engine = Engine(model, num_slots=1, max_seq_len=12, stop_token_ids=(), decode_steps=2)
    assert not engine.busy and engine.num_free_slots == 1
    h = engine.add(Request([1, 2, 3], max_new_tokens=50))
    h2 = engine.add(Request([4], max_new_tokens=2))
    assert engine.busy and engine.num_waiting == 2
    with pytest.raises(ValueError, match="queued"):
        engine.add(Request([5], max_new_tokens=2, conversation=h))
    with pytest.raises(ValueError, match="not live"):
        engine.add(Request([5], max_new_tokens=2, conversation=99))
    with pytest.raises(ValueError, match="outside"):
        engine.add(Request([1, 10**6], max_new_tokens=2))
    with pytest.raises(ValueError, match="empty prompt"):
        engine.add(Request([], max_new_tokens=2))
    with pytest.raises(ValueError, match="max_stop_ids"):
        engine.add(Request([1], max_new_tokens=2, stop_token_ids=list(range(9))))
    with pytest.raises(ValueError, match="tokenizer"):
        engine.add(Request([1], max_new_tokens=2, stop_strings=["x"]))
    engine.step()                         # h runs in the only slot; h2 waits
    assert engine.num_running == 1 and engine.num_waiting == 1
    with pytest.raises(ValueError, match="running"):
        engine.release(h)
    turns = _drain(engine)
    first = [t for t in turns if t.handle == h][0]
    # The budget is cut so the conversation fits max_seq_len (3 + 9 = 12).
    assert first.finish_reason == "length" and len(first.tokens) == 9
    with pytest.raises(ValueError, match="max_seq_len=12"):
        engine.add(Request([7], max_new_tokens=1, conversation=h))
    engine.release(h)
    engine.release(h2)
    assert engine.num_free_slots == 1 and not engine.busy
    # Chunks are padded to 16 tokens, more than max_seq_len; the cache still keeps its
    # length (a resize would recompile every program) and the padding is dropped.
    assert kv_cache.capacity(engine.cache) == 12 and engine.stats["resizes"] == 0
    with pytest.raises(ValueError, match="config="):
        Engine(nnx.graphdef(model), num_slots=1)
