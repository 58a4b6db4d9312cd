"""Greedy decoding equals transformers' generate; sampled logprobs equal a full forward."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from sampling_helpers import (DENSE, MOE, full_forward_logprobs, make_hf_model,  # noqa: E402
                              random_prompts, to_sandmle)

from sandmle.sampling import Sampler, SamplingParams  # noqa: E402

LENGTHS = (7, 3, 12, 1)
NEW = 10


def hf_greedy(hf_model, prompts, new_tokens):
    """transformers' generate(do_sample=False) on a left-padded batch; new ids per row."""
    t = max(map(len, prompts))
    ids = torch.zeros((len(prompts), t), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, t - len(p):] = torch.as_tensor(p)
        mask[i, t - len(p):] = 1
    with torch.no_grad():
        out = hf_model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                eos_token_id=None, pad_token_id=0)
    return out[:, t:].numpy()


@pytest.mark.parametrize("kind,fields", [("dense", DENSE), ("moe", MOE)])
def test_greedy_matches_transformers_generate(kind, fields):
    hf_model = make_hf_model(kind, fields)
    model = to_sandmle(hf_model)
    prompts = random_prompts(fields["vocab_size"], LENGTHS, seed=1)
    ref = hf_greedy(hf_model, prompts, NEW)
    gen = Sampler(model, stop_token_ids=()).generate(
        prompts, max_new_tokens=NEW, sampling=SamplingParams(greedy=True))
    assert gen.finish_reasons == ["length"] * len(prompts)
    np.testing.assert_array_equal(gen.tokens[:, :NEW], ref)
    # Greedy: the policy logprob is the max of the full forward's log-softmax.
    for b, p in enumerate(prompts):
        seq = p + gen.sequences()[b]
        np.testing.assert_allclose(gen.logprobs[b, :NEW], full_forward_logprobs(model, seq, len(p)),
                                   atol=1e-4)
    assert np.all(gen.sampling_logprobs == 0)


def test_logprobs_match_full_forward_across_turns():
    """Temperature-1 logprobs equal an uncached forward of the whole conversation, for the
    first turn and after two appended turns (rows finishing and skipping turns)."""
    hf_model = make_hf_model("dense", DENSE, seed=3)
    model = to_sandmle(hf_model)
    v = DENSE["vocab_size"]
    prompts = random_prompts(v, (5, 11, 2), seed=2)
    # A small cache multiple makes the later turns grow the cache.
    sampler = Sampler(model, stop_token_ids=(), cache_multiple=16)
    sp = SamplingParams(temperature=0.8, top_k=50, top_p=0.95)
    convs = [list(p) for p in prompts]
    gen = sampler.generate(prompts, max_new_tokens=[6, 9, 4], sampling=sp, seed=0)
    turns = [(gen, [len(p) for p in prompts])]
    for b in range(3):
        convs[b] += gen.sequences()[b]
    appends = [[[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11]], [[12, 13], None, [14]]]
    state = gen.state
    first_length = state.cache_length
    for k, app in enumerate(appends):
        starts = []
        for b in range(3):
            if app[b] is not None:
                convs[b] += app[b]
            starts.append(len(convs[b]))
        gen = sampler.extend(state, app, max_new_tokens=[5, 3, 7], sampling=sp, seed=k + 1)
        state = gen.state
        for b in range(3):
            if app[b] is None:
                assert gen.finish_reasons[b] == "idle" and gen.lengths[b] == 0
            else:
                convs[b] += gen.sequences()[b]
        turns.append((gen, starts))
    assert state.cache_length > first_length  # the later turns grew the cache
    # One fresh forward per row over the final conversation checks every turn's logprobs.
    for b in range(3):
        offset = 0
        full = full_forward_logprobs(model, convs[b], 1)
        for g, starts in turns:
            n = int(g.lengths[b])
            if n == 0:
                continue
            ref = full[starts[b] - 1: starts[b] - 1 + n]
            np.testing.assert_allclose(g.logprobs[b, :n], ref, atol=1e-4)
            offset += 1
        assert offset >= 2
    # The sampling logprob differs from the policy one (temperature and filters applied).
    assert not np.allclose(gen.sampling_logprobs[0, :gen.lengths[0]],
                           gen.logprobs[0, :gen.lengths[0]])
