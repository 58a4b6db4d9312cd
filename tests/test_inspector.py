"""sandmle-inspect on a real checkpoint of the regression job (saved on 8 devices)."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from configs import regression as regression_config
from sandmle import inspector, regression
from test_checkpoint import _truncate_arrays

# One worker runs this module: its module fixtures are built once (pytest.ini).
pytestmark = pytest.mark.xdist_group("inspector")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("inspect") / "run"
    cfg = regression_config.get_config("runlocal")
    cfg.steps, cfg.checkpoint.every_steps = 20, 10
    cfg.mesh.shape = (2, 2, 2, 1)
    regression.train_and_evaluate(cfg, str(work))
    return work


def _inspect(*args):
    # One CPU device and no model import: inspection needs neither the saving mesh
    # nor the code that built the tree.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-m", "sandmle.inspector", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_lists_steps_tree_config_and_metrics(workdir):
    proc = _inspect(workdir, "--step", 10)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    steps = re.findall(r"^│ (\d+)\s+│ [\d.]+ KiB", out, flags=re.M)
    assert steps == ["10", "20"]
    assert "train_state at step 10" in out
    row = next(l for l in out.splitlines() if "['params']['w_in']" in l)
    # (16, 32) float32 = 2 KiB, embed->fsdp, mlp->tensor on the saving mesh.
    assert "(16, 32)" in row and "float32" in row and "2.0 KiB" in row
    assert "P('fsdp', 'tensor') on data=2,fsdp=2,tensor=2,expert=1" in row
    assert re.search(r"\['rng'\].*uint32 \(key<threefry2x32> data\)", out)
    assert re.search(r"\['step'\]\s+│ \(\)\s+│ int32\s+│ 4 B", out)
    assert "metrics at step 10" in out and '"loss":' in out and '"grad_norm":' in out
    assert '"index": 320' in out  # loop state: 10 batches of 32
    assert '"job": "regression"' in out and '"steps": 20' in out
    assert "Traceback" not in proc.stderr


def test_step_folder_defaults_to_its_step(workdir):
    proc = _inspect(workdir / "checkpoints" / "20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train_state at step 20" in proc.stdout


def test_diff_with_itself_is_zero_everywhere(workdir):
    proc = _inspect("--diff", workdir / "checkpoints" / "20", workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [l for l in proc.stdout.splitlines() if l.startswith("│ [")]
    assert len(rows) == 16
    numeric = [l for l in rows if "['rng']" not in l]
    assert all(re.search(r"│ 0\s+│", l) for l in numeric), numeric
    rng = next(l for l in rows if "['rng']" in l)
    assert "key<threefry2x32>: equal" in rng and re.search(r"│ -\s+│", rng)
    assert ("A = step 20, B = step 20; largest difference over all numeric leaves: 0; "
            "PRNG keys: 1 equal, 0 different") in proc.stdout


def test_diff_between_steps_compares_keys_as_keys(workdir):
    rows = {r["path"]: r for r in inspector.diff(
        inspector.locate(str(workdir / "checkpoints" / "10")), inspector.locate(str(workdir)))}
    assert rows["['step']"]["max_abs_diff"] == 10
    assert rows["['params']['w_in']"]["max_abs_diff"] > 0
    # The key's raw bits differ by ~1e9; that is "different", not a distance.
    assert rows["['rng']"]["max_abs_diff"] is None and rows["['rng']"]["equal"] is False
    assert rows["['rng']"]["note"] == "key<threefry2x32>: different"
    proc = _inspect("--diff", workdir / "checkpoints" / "10", workdir)
    assert "A = step 10, B = step 20;" in proc.stdout and "1 different" in proc.stdout
    assert "(step 10)" in proc.stdout and "(step 20)" in proc.stdout


def test_corrupt_newest_step_is_listed_and_the_previous_one_shown(workdir, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(workdir, work)
    _truncate_arrays(work / "checkpoints" / "20")
    # A save that never finished (a kill -9 during an async save leaves this).
    shutil.copytree(work / "checkpoints" / "10", work / "checkpoints" /
                    "30.orbax-checkpoint-tmp-1234")
    proc = _inspect(work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "sandmle-inspect: newest step is corrupt; showing step 10 (the newest that reads "
        "back)"]
    table = proc.stdout.split("train_state at step")[0]
    assert re.search(r"│ 20\s+│.*│ corrupt: ", table)
    assert re.search(r"│ 10\s+│.*│ ok \(arrays read\)", table)
    assert re.search(r"│ 30\s+│.*│ partial: the save never finished", table)
    assert "train_state at step 10" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_noverify_reads_metadata_only_and_metric_files_are_summarised(workdir):
    proc = _inspect(workdir, "--noverify")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"│ 20\s+│.*│ ok \(metadata read\)", proc.stdout)
    assert "metrics.jsonl: 2 records, steps 10..20" in proc.stdout
    assert re.search(r"tensorboard: 4 tags, up to 2 points each, last step 20", proc.stdout)


def test_missing_path_is_a_clear_error(tmp_path):
    proc = _inspect(tmp_path / "nope")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = _inspect(tmp_path / "empty")
    assert proc.returncode == 2 and "holds no checkpoints" in proc.stderr
