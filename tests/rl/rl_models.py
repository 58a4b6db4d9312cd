"""Tiny random Qwen3 policies and critics for the rl tests (built on a mesh)."""

import functools

import jax

from sandmle import parallel
from sandmle.models import qwen3

VOCAB = 32


def config(vocab: int = VOCAB, layers: int = 1):
    return qwen3.get_preset("tiny", vocab_size=vocab, num_hidden_layers=layers)


def single_device_mesh():
    return parallel.make_mesh((1, 1, 1, 1), jax.devices()[:1])


def make(mesh=None, seed=0, value_head=False, vocab=VOCAB, layers=1):
    """A tiny Qwen3 (or Qwen3Critic) with parameters created on `mesh`'s shards.

    Single-device models are cached: learners copy the weights into their own state,
    so one module can seed many learners.
    """
    if mesh is None:
        return _cached(seed, value_head, vocab, layers)
    cls = qwen3.Qwen3Critic if value_head else qwen3.Qwen3
    return qwen3.create_sharded(config(vocab, layers), mesh, seed=seed, model_cls=cls)


@functools.lru_cache(maxsize=None)
def _cached(seed, value_head, vocab, layers):
    cls = qwen3.Qwen3Critic if value_head else qwen3.Qwen3
    return qwen3.create_sharded(config(vocab, layers), single_device_mesh(), seed=seed,
                                model_cls=cls)
