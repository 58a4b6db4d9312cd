"""The quick start's task generation: default `runlocal` vs `runlocal,fast`, side by side.

Run:  python benchmarks/envgen_speed.py [--n=6] [--variants=runlocal,runlocal+fast]

Each variant runs the envgen pipeline (fresh workdir, one farm shared by the variants, one
after the other) and the table prints wall seconds, candidates, accepted tasks, modalities
covered, seconds per accepted task, the median leaderboard seconds per candidate and the
median seconds of one reference solution. `fast` trades leaderboard size (10 references
instead of 14) and test set size (half) for speed; its rejection rate is part of the price,
which is why seconds per accepted task is the figure to compare. Timings on a shared
machine are noisy; the ratio between variants measured in one run is what to read.
"""

from __future__ import annotations

import os
import sys

# Run as `python <dir>/<name>.py` from a checkout: the repo root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json
import statistics
import tempfile
import time
from pathlib import Path

from absl import flags

from sandmle import cli

N = flags.DEFINE_integer("n", 6, "accepted tasks wanted per variant", lower_bound=1)
VARIANTS = flags.DEFINE_list("variants", ["runlocal", "runlocal+fast"],
                             "configs/envgen.py args per variant ('+' joins args)")
SCRATCH = flags.DEFINE_string("scratch", "", "folder for the workdirs (default: temp dir)")


def main(argv):
    del argv
    from configs.envgen import get_config
    from sandmle.envgen import pipeline
    rows = []
    first = get_config("runlocal")
    farm = pipeline.make_farm(first)
    try:
        for variant in VARIANTS.value:
            config = get_config(",".join(variant.split("+") + [f"n={N.value}"]))
            with tempfile.TemporaryDirectory(prefix="envgen-speed-", dir=SCRATCH.value or None) as tmp:
                os.chmod(tmp, 0o755)  # the farm's job uids must reach the staged inputs
                t0 = time.perf_counter()
                summary = pipeline.run_envgen(config, str(Path(tmp) / "work"), farm=farm,
                                              progress=False, printer=lambda s: None)
                wall = time.perf_counter() - t0
                manifest = [json.loads(l) for l in
                            (Path(tmp) / "work" / "manifest.jsonl").read_text().splitlines()]
            boards = [r["timings"].get("leaderboard_s", 0.0) for r in manifest]
            sols = [x["wall_s"] for r in manifest for x in r.get("references", [])]
            rows.append((variant, wall, summary["candidates"], summary["accepted"],
                         len(summary["accepted_by_modality"]),
                         wall / max(1, summary["accepted"]),
                         statistics.median(boards) if boards else float("nan"),
                         statistics.median(sols) if sols else float("nan")))
            print(f"{variant}: {summary['accepted']} accepted in {wall:.0f} s", flush=True)
    finally:
        farm.close()
    head = (f"{'variant':16s} {'wall s':>7s} {'cands':>6s} {'accepted':>8s} {'modalities':>10s} "
            f"{'s/accepted':>10s} {'s/leaderboard':>13s} {'s/solution':>10s}")
    print(head)
    print("-" * len(head))
    for v, wall, c, a, m, per, board, sol in rows:
        print(f"{v:16s} {wall:7.0f} {c:6d} {a:8d} {m:10d} {per:10.1f} {board:13.1f} {sol:10.2f}")
    base = rows[0][5]
    for v, *_, per, _, _ in rows[1:]:
        print(f"{v} vs {rows[0][0]}: {base / per:.2f}x faster per accepted task")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
