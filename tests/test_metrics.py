"""MetricWriter fans out to TensorBoard event files, metrics.jsonl and the console."""

import io
import json
import math
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

from sandmle import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_writer_fans_out_and_reads_back(tmp_path):
    with metrics.MetricWriter(tmp_path, enabled=True) as w:
        for step in range(1, 4):
            w.write_scalars(step, {"loss": 1.0 / step, "lr": np.float32(0.5),
                                   "acc": jnp.asarray(step / 10)})
        w.write_scalars(4, {"loss": float("nan")})
        w.write_text(4, "note", "hello")
    events = metrics.read_scalar_events(tmp_path)
    assert [s for s, _ in events["loss"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in events["loss"][:3]], [1, 0.5, 1 / 3], rtol=1e-6)
    assert math.isnan(events["loss"][3][1])
    assert events["acc"][2] == (3, pytest.approx(0.3))
    records = metrics.read_jsonl(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[1]["loss"] == 0.5 and records[1]["lr"] == 0.5
    assert records[3]["loss"] == "nan"  # JSON has no NaN: kept readable, file stays valid
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_console_line(tmp_path, caplog):
    caplog.set_level("INFO", logger="absl")  # absl sets its own level
    w = metrics.MetricWriter(tmp_path, tensorboard=False, jsonl=False, enabled=True)
    w.write_scalars(7, {"loss": 0.25, "lr": 1e-4})
    w.close()
    assert "[step 7] loss=0.25  lr=0.0001" in caplog.text


def test_resume_appends(tmp_path):
    for start in (0, 2):
        with metrics.MetricWriter(tmp_path, console=False, enabled=True) as w:
            for step in range(start, start + 2):
                w.write_scalars(step, {"x": step})
    assert [r["x"] for r in metrics.read_jsonl(tmp_path)] == [0, 1, 2, 3]
    assert [s for s, _ in metrics.read_scalar_events(tmp_path)["x"]] == [0, 1, 2, 3]


def test_disabled_writer_writes_nothing(tmp_path):
    # What every process but 0 gets in a multi-host run.
    w = metrics.MetricWriter(tmp_path / "run", enabled=False)
    w.write_scalars(1, {"loss": 1.0})
    w.close()
    assert not (tmp_path / "run").exists()


def test_non_scalar_rejected(tmp_path):
    w = metrics.MetricWriter(tmp_path, console=False, enabled=True)
    with pytest.raises(TypeError, match="'vec' must be a real scalar"):
        w.write_scalars(1, {"vec": np.ones(3)})
    w.close()


def test_partial_jsonl_line_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "x": 1}\n{"step": 2, "x"')
    assert metrics.read_jsonl(tmp_path) == [{"step": 1, "x": 1}]


def test_progress_shows_rate_and_eta():
    out = io.StringIO()
    bar = metrics.progress(10, desc="train", enabled=True, file=out)
    bar.update(5)
    bar.refresh()
    text = out.getvalue()
    bar.close()
    assert "5/10" in text and "step/s" in text and "<" in text


def test_only_process_zero_writes_by_default(tmp_path, monkeypatch):
    import jax
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    w = metrics.MetricWriter(tmp_path / "p1")
    assert not w.enabled and metrics.progress(5).disable
    w.write_scalars(1, {"loss": 1.0})
    w.close()
    assert not (tmp_path / "p1").exists()
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    with metrics.MetricWriter(tmp_path / "p0", console=False) as w:
        w.write_scalars(1, {"loss": 1.0})
    assert metrics.read_jsonl(tmp_path / "p0")[0]["loss"] == 1.0


def test_resume_rewinds_jsonl_and_hides_orphaned_events(tmp_path):
    # A run wrote steps 1..30 but its last checkpoint is step 20: a resumed run
    # continues at 21, so 21..30 of the first run must not show twice.
    with metrics.MetricWriter(tmp_path, console=False, enabled=True) as w:
        for step in range(1, 31):
            w.write_scalars(step, {"x": step})
    with metrics.MetricWriter(tmp_path, console=False, enabled=True, resume_step=20) as w:
        for step in range(21, 26):
            w.write_scalars(step, {"x": 100 + step})
    records = metrics.read_jsonl(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 26))
    assert records[-1]["x"] == 125
    events = metrics.read_scalar_events(tmp_path)["x"]
    assert [s for s, _ in events] == list(range(1, 26))
    assert events[20] == (21, 121.0)


def test_rewind_jsonl_drops_a_partial_line_and_touches_nothing_else(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "x": 1}\n{"step": 2, "x": 2}\n{"step": 3, "x"')
    assert metrics.rewind_jsonl(tmp_path, 5) == 1
    assert path.read_text() == '{"step": 1, "x": 1}\n{"step": 2, "x": 2}\n'
    mtime = path.stat().st_mtime_ns
    assert metrics.rewind_jsonl(tmp_path, 5) == 0 and path.stat().st_mtime_ns == mtime
    assert metrics.rewind_jsonl(tmp_path / "elsewhere", 0) == 0


def test_truncated_event_file_reads_up_to_the_damage(tmp_path):
    with metrics.MetricWriter(tmp_path, console=False, enabled=True) as w:
        for step in range(1, 51):
            w.write_scalars(step, {"loss": 1.0 / step})
    (event_file,) = (tmp_path / "tensorboard").iterdir()
    event_file.write_bytes(event_file.read_bytes()[:-7])  # a record cut mid-write
    steps = [s for s, _ in metrics.read_scalar_events(tmp_path)["loss"]]
    assert steps == list(range(1, 50))


def test_flushed_metrics_survive_kill_9(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        from sandmle import metrics
        w = metrics.MetricWriter({str(tmp_path)!r}, console=False, enabled=True,
                                 flush_secs=3600)
        for step in range(1, 31):
            w.write_scalars(step, {{"loss": float(step)}})
            if step == 20:
                w.flush()  # what a job does with every checkpoint
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    tb_steps = [s for s, _ in metrics.read_scalar_events(tmp_path)["loss"]]
    assert tb_steps[:20] == list(range(1, 21)) and tb_steps == sorted(set(tb_steps))
    # metrics.jsonl lines reach the OS as they are written: all 30 are there.
    assert [r["step"] for r in metrics.read_jsonl(tmp_path)] == list(range(1, 31))


def test_final_metrics_takes_the_last_value_of_each(tmp_path):
    assert metrics.final_metrics(tmp_path) == {}
    with metrics.MetricWriter(tmp_path, console=False, tensorboard=False, enabled=True) as w:
        w.write_scalars(10, {"loss": 2.0, "eval_loss": 3.0})
        w.write_scalars(20, {"loss": 1.0})
    assert metrics.final_metrics(tmp_path) == {"step": 20, "loss": 1.0, "eval_loss": 3.0}
