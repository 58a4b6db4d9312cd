"""decode_spans: the cache lengths of the decode loops cover every slot a step can write."""

import pytest

from sandmle.sampling.decode import decode_spans


@pytest.mark.parametrize("cache_len,first", [(384, 128), (128, 16), (200, 190), (4096, 128),
                                             (64, 63), (1000, 1)])
def test_spans_cover_every_decode_slot(cache_len, first):
    spans = decode_spans(cache_len, first)
    assert spans[-1] == cache_len
    assert spans == sorted(set(spans)) and spans[0] > first
    assert len(spans) <= 8
    # Each slot a step may write runs in the loop of the first span above it; that loop's
    # cache must not be much longer than the filled part (else nothing is saved).
    bound = 64 + 2 * -(-(cache_len - first) // 8)
    for slot in range(first, cache_len):
        assert next(s for s in spans if slot < s) - slot <= bound


def test_spans_cut_the_bucketed_cache():
    # Prompt bucket 128 + 256 new tokens -> a 384-slot cache read in 64-slot steps.
    assert decode_spans(384, 128) == [192, 256, 320, 384]
