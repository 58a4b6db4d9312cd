"""Smoke test of benchmarks/forward_bench.py: it runs and both frameworks agree."""

from __future__ import annotations

import importlib.util
import os

import pytest

pytest.importorskip("torch")


def test_forward_bench_runs_and_frameworks_agree():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        "forward_bench", os.path.join(root, "benchmarks", "forward_bench.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.run_benchmark("tiny", "cpu", "float32", batch=2, length=8, rounds=1, iters=1)
    assert r["max_logits_diff"] <= 1e-4
    assert r["sandmle_tok_s"] > 0 and r["transformers_tok_s"] > 0
    assert "sandmle tok/s" in bench.format_result(r)
