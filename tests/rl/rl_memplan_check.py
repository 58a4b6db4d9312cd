"""Builds real learner states for tiny presets on 8 fake devices; prints bytes per device.

Prints one JSON line {preset: {"params": int, "optimizer": int, "devices_agree": bool}}
counted from the arrays' addressable shards (what each device really holds).
"""

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(_HERE))]

import jax  # noqa: E402

from sandmle import parallel  # noqa: E402
from sandmle.models import qwen3  # noqa: E402
from sandmle.rl import config as rl_config  # noqa: E402
from sandmle.rl import learner as learner_lib  # noqa: E402

CASES = {"tiny": (2, 2, 2, 1), "tiny-moe": (1, 2, 1, 4)}


def per_device(tree):
    counts = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            counts[shard.device.id] = counts.get(shard.device.id, 0) + shard.data.nbytes
    return counts


def main():
    out = {}
    for preset, shape in CASES.items():
        mesh = parallel.make_mesh(shape)
        model = qwen3.create_sharded(qwen3.get_preset(preset), mesh)
        state = learner_lib.Learner(model, rl_config.default_config(), mesh).init_state()
        p, o = per_device(state.params), per_device(state.opt_state)
        out[preset] = {"mesh": ",".join(map(str, shape)), "params": max(p.values()),
                       "optimizer": max(o.values()),
                       "devices_agree": len(set(p.values())) == 1 and len(set(o.values())) == 1}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
