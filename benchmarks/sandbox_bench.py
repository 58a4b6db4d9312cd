"""Sandbox farm vs cold subprocesses, measured side by side in one run.

Run:  python benchmarks/sandbox_bench.py [--jobs=64] [--latency_runs=30]

Prints (1) median latency of a trivial job through the farm vs a cold
`python -c 'import numpy, pandas, sklearn'` (goal: farm <= 1/30), (2) throughput
on typical solution scripts (pandas read of a 200-row train.csv, a scikit-learn
pipeline, predict, write submission.csv) with 2 farm workers vs a pool of 2 cold
subprocesses (goal: >= 2x), (3) the same jobs under isolation 'auto' vs 'none'
(goal: auto < 20% slower). Timings on a shared machine are noisy; the ratios
are what to read.
"""

from __future__ import annotations

import os
import sys

# Run as `python <dir>/<name>.py` from a checkout: the repo root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

from sandmle import cli

from sandmle.sandbox import Job, SandboxFarm
from sandmle.sandbox.config import default_config

FLAGS = flags.DEFINE_integer("jobs", 64, "solution scripts per throughput run", lower_bound=1)
RUNS = flags.DEFINE_integer("latency_runs", 30, "trivial jobs / cold starts for the medians",
                            lower_bound=1)
WORKERS = flags.DEFINE_integer("workers", 2, "farm workers and cold pool size", lower_bound=1)

SOLUTION = """
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

train = pd.read_csv('input/train.csv')
test = pd.read_csv('input/test.csv')
num = [c for c in train.columns if c.startswith('f')]
pre = ColumnTransformer([
    ('num', make_pipeline(SimpleImputer(), StandardScaler()), num),
    ('cat', OneHotEncoder(handle_unknown='ignore'), ['cat']),
])
model = make_pipeline(pre, RandomForestClassifier(n_estimators=SEED_TREES, random_state=0))
model.fit(train.drop(columns=['id', 'label']), train['label'])
pred = model.predict(test.drop(columns=['id']))
pd.DataFrame({'id': test['id'], 'label': pred}).to_csv('submission.csv', index=False)
print('rows', len(pred))
"""


def make_task(root: str, rows: int = 200) -> str:
    """A micro task: 200 training rows, 8 numeric features + 1 categorical."""
    rng = np.random.default_rng(0)
    pub = os.path.join(root, "task", "public")
    os.makedirs(pub, exist_ok=True)
    os.makedirs(os.path.join(root, "task", "private"), exist_ok=True)
    for name, n, labelled in (("train", rows, True), ("test", rows // 2, False)):
        x = rng.normal(size=(n, 8))
        lines = ["id," + ",".join(f"f{i}" for i in range(8)) + ",cat" + (",label" if labelled else "")]
        for i in range(n):
            row = [str(i)] + [f"{v:.4f}" for v in x[i]] + [rng.choice(["a", "b", "c"])]
            if labelled:
                row.append(str(int(x[i, 0] + x[i, 1] > 0)))
            lines.append(",".join(row))
        with open(os.path.join(pub, f"{name}.csv"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return os.path.join(root, "task")


def scripts(n: int) -> list[str]:
    return [SOLUTION.replace("SEED_TREES", str(10 + i % 5 * 10)) for i in range(n)]


def cold_start() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import numpy, pandas, sklearn"], check=True)
    return time.perf_counter() - t


def farm_trivial(farm: SandboxFarm, root: str) -> float:
    t = time.perf_counter()
    r = farm.submit(Job(workdir=os.path.join(root, "lat"), code="print(1)")).result()
    assert r.status == "ok", r
    return time.perf_counter() - t


def farm_batch(farm: SandboxFarm, root: str, task: str, codes: list[str], tag: str) -> float:
    """Seconds to run `codes` through the farm (all submitted at once)."""
    jobs = [Job(workdir=os.path.join(root, f"{tag}{i}"), code=c, timeout_s=300,
                inputs={"input": os.path.join(task, "public")},
                hidden=[os.path.join(task, "private")]) for i, c in enumerate(codes)]
    t = time.perf_counter()
    results = farm.map(jobs)
    dt = time.perf_counter() - t
    bad = [r for r in results if r.status != "ok" or r.files != ["submission.csv"]]
    assert not bad, bad[0]
    return dt


def cold_batch(root: str, task: str, codes: list[str], workers: int, tag: str) -> float:
    """Seconds to run `codes` as `python solution.py` with a pool of `workers`."""
    def one(i_code):
        i, code = i_code
        wd = os.path.join(root, f"{tag}{i}")
        os.makedirs(wd, exist_ok=True)
        link = os.path.join(wd, "input")
        if not os.path.lexists(link):
            os.symlink(os.path.join(task, "public"), link)
        with open(os.path.join(wd, "solution.py"), "w") as f:
            f.write(code)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        p = subprocess.run([sys.executable, "solution.py"], cwd=wd, env=env, capture_output=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]

    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, enumerate(codes)))
    return time.perf_counter() - t


def run_benchmark(jobs: int, latency_runs: int, workers: int, chunk: int = 16) -> dict[str, float]:
    """Runs the three comparisons and prints them; returns the figures.

    The machine is shared and its load drifts over minutes, so the compared
    paths are interleaved: trivial job and cold start alternate, and the
    solution scripts run in chunks, auto farm / none farm / cold pool in turn.
    """
    root = tempfile.mkdtemp(prefix="sandbox_bench_")
    task = make_task(root)
    codes = scripts(jobs)
    cfg_auto = default_config()
    cfg_auto.num_workers = workers
    cfg_none = default_config()
    cfg_none.num_workers = workers
    cfg_none.isolation = "none"
    farm_lat, cold_lat = [], []
    secs = {"auto": 0.0, "none": 0.0, "cold": 0.0}
    with SandboxFarm(cfg_auto) as auto, SandboxFarm(cfg_none) as none:
        mode = auto.stats()["isolation"]
        for _ in range(3):  # warm the page cache and the workers
            farm_trivial(auto, root)
        for _ in range(latency_runs):
            farm_lat.append(farm_trivial(auto, root))
            cold_lat.append(cold_start())
        farm_batch(auto, root, task, codes[:2], "warm")
        farm_batch(none, root, task, codes[:2], "warmn")
        for c0 in range(0, jobs, chunk):
            part = codes[c0:c0 + chunk]
            secs["auto"] += farm_batch(auto, root, task, part, f"a{c0}_")
            secs["none"] += farm_batch(none, root, task, part, f"n{c0}_")
            secs["cold"] += cold_batch(root, task, part, workers, f"c{c0}_")
    out = {"farm_latency_s": statistics.median(farm_lat), "cold_latency_s": statistics.median(cold_lat),
           "auto_jobs_per_s": jobs / secs["auto"], "none_jobs_per_s": jobs / secs["none"],
           "cold_jobs_per_s": jobs / secs["cold"]}
    lat_ratio = out["farm_latency_s"] / out["cold_latency_s"]
    thr_ratio = out["auto_jobs_per_s"] / out["cold_jobs_per_s"]
    iso_cost = out["none_jobs_per_s"] / out["auto_jobs_per_s"] - 1
    print(f"isolation in use: {mode}; {workers} workers; {jobs} solution scripts; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"(1) trivial job median   farm {out['farm_latency_s'] * 1e3:8.1f} ms | cold python -c import "
          f"{out['cold_latency_s'] * 1e3:8.1f} ms | ratio 1/{1 / lat_ratio:.1f} (goal <= 1/30)")
    print(f"(2) throughput           farm {out['auto_jobs_per_s']:8.2f} jobs/s | cold pool of {workers} "
          f"{out['cold_jobs_per_s']:8.2f} jobs/s | {thr_ratio:.2f}x (goal >= 2x)")
    print(f"(3) isolation cost       auto {out['auto_jobs_per_s']:8.2f} jobs/s | none "
          f"{out['none_jobs_per_s']:8.2f} jobs/s | auto {iso_cost * 100:+.1f}% slower (goal < 20%)")
    out.update(latency_ratio=lat_ratio, throughput_ratio=thr_ratio, isolation_cost=iso_cost)
    return out


def main(argv: list[str]) -> None:
    del argv
    run_benchmark(FLAGS.value, RUNS.value, WORKERS.value)


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
