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

import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from sandmle.sandbox import Job, SandboxFarm
from sandmle.sandbox.config import default_config

FLAGS = flags.DEFINE_integer("jobs", 64, "solution scripts per throughput run")
RUNS = flags.DEFINE_integer("latency_runs", 30, "trivial jobs / cold starts for the medians")
WORKERS = flags.DEFINE_integer("workers", 2, "farm workers and cold pool size")

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


def cold_latency(runs: int) -> float:
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy, pandas, sklearn"], check=True)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def farm_latency(farm: SandboxFarm, root: str, runs: int) -> float:
    ts = []
    for i in range(runs + 3):
        t = time.perf_counter()
        r = farm.submit(Job(workdir=os.path.join(root, "lat"), code="print(1)")).result()
        assert r.status == "ok", r
        if i >= 3:  # the first jobs warm caches
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def farm_throughput(farm: SandboxFarm, root: str, task: str, codes: list[str], tag: str) -> float:
    jobs = [Job(workdir=os.path.join(root, f"{tag}{i}"), code=c, timeout_s=120,
                inputs={"input": os.path.join(task, "public")},
                hidden=[os.path.join(task, "private")]) for i, c in enumerate(codes)]
    t = time.perf_counter()
    results = farm.map(jobs)
    dt = time.perf_counter() - t
    bad = [r for r in results if r.status != "ok" or r.files != ["submission.csv"]]
    assert not bad, bad[0]
    return len(jobs) / dt


def cold_throughput(root: str, task: str, codes: list[str], workers: int) -> float:
    def one(i_code):
        i, code = i_code
        wd = os.path.join(root, f"cold{i}")
        os.makedirs(wd, exist_ok=True)
        link = os.path.join(wd, "input")
        if not os.path.lexists(link):
            os.symlink(os.path.join(task, "public"), link)
        with open(os.path.join(wd, "solution.py"), "w") as f:
            f.write(code)
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        p = subprocess.run([sys.executable, "solution.py"], cwd=wd, env=env, capture_output=True,
                           timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]

    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, enumerate(codes)))
    return len(codes) / (time.perf_counter() - t)


def run_benchmark(jobs: int, latency_runs: int, workers: int) -> dict[str, float]:
    """Runs the three comparisons and prints them; returns the figures."""
    root = tempfile.mkdtemp(prefix="sandbox_bench_")
    task = make_task(root)
    codes = scripts(jobs)
    out: dict[str, float] = {}
    cfg = default_config()
    cfg.num_workers = workers
    with SandboxFarm(cfg) as farm:
        mode = farm.stats()["isolation"]
        out["farm_latency_s"] = farm_latency(farm, root, latency_runs)
        out["cold_latency_s"] = cold_latency(latency_runs)
        out["farm_jobs_per_s"] = farm_throughput(farm, root, task, codes, "auto")
        out["cold_jobs_per_s"] = cold_throughput(root, task, codes, workers)
        # Second auto pass right next to the 'none' pass, for the isolation cost.
        auto2 = farm_throughput(farm, root, task, codes, "auto2")
    cfg.isolation = "none"
    with SandboxFarm(cfg) as farm:
        out["none_jobs_per_s"] = farm_throughput(farm, root, task, codes, "none")
    out["auto_jobs_per_s"] = (out["farm_jobs_per_s"] + auto2) / 2
    lat_ratio = out["farm_latency_s"] / out["cold_latency_s"]
    thr_ratio = out["farm_jobs_per_s"] / out["cold_jobs_per_s"]
    iso_cost = out["none_jobs_per_s"] / out["auto_jobs_per_s"] - 1
    print(f"isolation in use: {mode}; {workers} workers; {jobs} solution scripts; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"(1) trivial job median   farm {out['farm_latency_s'] * 1e3:8.1f} ms | cold python -c import "
          f"{out['cold_latency_s'] * 1e3:8.1f} ms | ratio 1/{1 / lat_ratio:.1f} (goal <= 1/30)")
    print(f"(2) throughput           farm {out['farm_jobs_per_s']:8.2f} jobs/s | cold pool of {workers} "
          f"{out['cold_jobs_per_s']:8.2f} jobs/s | {thr_ratio:.2f}x (goal >= 2x)")
    print(f"(3) isolation cost       auto {out['auto_jobs_per_s']:8.2f} jobs/s | none "
          f"{out['none_jobs_per_s']:8.2f} jobs/s | auto {iso_cost * 100:+.1f}% slower (goal < 20%)")
    out.update(latency_ratio=lat_ratio, throughput_ratio=thr_ratio, isolation_cost=iso_cost)
    return out


def main(argv: list[str]) -> None:
    del argv
    run_benchmark(FLAGS.value, RUNS.value, WORKERS.value)


if __name__ == "__main__":
    app.run(main)
