"""tpu/ scripts: --dry_run prints the gcloud commands, --help the usage, delete asks,
setup deletes nothing outside its own folder; shellcheck passes."""

import os
import shlex
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(ROOT, "tpu")
COMMON = ["--name", "sandmle-pod", "--zone", "us-central2-b", "--dry_run"]


def _dry(script, *args):
    proc = subprocess.run(["bash", os.path.join(TPU, script), *COMMON, *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line) for line in proc.stdout.strip().splitlines()]


def _opt(cmd, name):
    return next(a.split("=", 1)[1] for a in cmd if a.startswith(f"--{name}="))


def test_create_single_host_and_pod_slice():
    for tpu_type in ("v4-8", "v4-32"):
        create, describe = _dry("create.sh", "--type", tpu_type, "--spot")
        assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "sandmle-pod"]
        assert _opt(create, "accelerator-type") == tpu_type
        assert _opt(create, "zone") == "us-central2-b" and "--spot" in create
        assert _opt(create, "version") == "tpu-ubuntu2204-base"
        assert describe[4] == "describe"


def test_setup_installs_on_every_worker():
    cmds = _dry("setup.sh", "--project", "my-proj")
    scp, ssh = cmds[-2], cmds[-1]
    assert scp[4] == "scp" and "--worker=all" in scp and _opt(scp, "project") == "my-proj"
    assert ssh[4] == "ssh" and "--worker=all" in ssh
    remote = _opt(ssh, "command")
    assert 'pip install -q -e "$D/src[tpu]"' in remote and 'python3 -m venv "$D/venv"' in remote
    assert "D=~/sandmle;" in remote
    git = _dry("setup.sh", "--git", "https://example.org/sandmle.git", "--ref", "v1")
    assert len(git) == 1
    assert 'git clone --depth 1 --branch v1 https://example.org/sandmle.git "$D/src.new"' in \
        _opt(git[0], "command")


def _setup_remote_without_install(tarball):
    """setup.sh's worker command up to the pip install, reading `tarball`."""
    (ssh,) = _dry("setup.sh")[-1:]
    remote = _opt(ssh, "command").split(' && python3 -m venv')[0]
    return remote.replace("/tmp/sandmle-src.tar.gz", str(tarball))


@pytest.fixture
def tarball(tmp_path):
    src = tmp_path / "src"
    (src / "sandmle").mkdir(parents=True)
    (src / "sandmle" / "new.py").write_text("x = 1\n")
    out = tmp_path / "src.tar.gz"
    subprocess.run(["tar", "-czf", str(out), "-C", str(src), "."], check=True)
    return out


def test_setup_on_a_worker_replaces_only_its_own_folder(tmp_path, tarball):
    # The worker command, run for real in a fake home (minus the pip install).
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    (home / "notes" / "keep.txt").write_text("mine")
    remote = _setup_remote_without_install(tarball)
    env = dict(os.environ, HOME=str(home))
    for _ in range(2):  # a first install, then a rerun that replaces src/
        proc = subprocess.run(["bash", "-c", remote], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    assert (home / "sandmle" / "src" / "sandmle" / "new.py").read_text() == "x = 1\n"
    assert (home / "sandmle" / ".sandmle-tpu").is_file()
    assert sorted(os.listdir(home / "sandmle")) == [".sandmle-tpu", "src"]
    assert (home / "notes" / "keep.txt").read_text() == "mine"


def test_setup_leaves_a_foreign_sandmle_folder_alone(tmp_path, tarball):
    home = tmp_path / "home"
    (home / "sandmle").mkdir(parents=True)
    (home / "sandmle" / "work.py").write_text("precious")
    proc = subprocess.run(["bash", "-c", _setup_remote_without_install(tarball)],
                          env=dict(os.environ, HOME=str(home)), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "was not made by tpu/setup.sh" in proc.stderr
    assert os.listdir(home / "sandmle") == ["work.py"]
    assert (home / "sandmle" / "work.py").read_text() == "precious"


def test_launch_runs_the_config_on_all_workers_multihost():
    (ssh,) = _dry("launch.sh", "--config", "configs/regression.py:runlocal", "--run", "r1",
                  "--ckpt_dir", "gs://b/r1/ck", "--config.mesh.shape=(2,2,2,1)")
    assert ssh[4] == "ssh" and "--worker=all" in ssh
    remote = shlex.split(_opt(ssh, "command").split("nohup ", 1)[1])
    assert remote[:4] == ["python", "-m", "sandmle.main", "--config=configs/regression.py:runlocal"]
    assert "--multihost" in remote
    assert "--config.checkpoint.directory=gs://b/r1/ck" in remote
    assert "--config.mesh.shape=(2,2,2,1)" in remote
    assert remote[remote.index("--workdir") + 1] == "~/sandmle-runs/r1"
    assert remote[-6:] == [">>", "~/sandmle-logs/r1.log", "2>&1", "<", "/dev/null", "&"]
    assert _opt(ssh, "command").startswith("cd ~/sandmle/src && . ~/sandmle/venv/bin/activate")


def test_sync_and_logs_and_delete():
    cmds = _dry("sync.sh", "--run", "r1", "--dest", "gs://b/r1", "--local", "runs/r1")
    assert "--worker=0" in cmds[0]
    assert _opt(cmds[0], "command") == "gcloud storage rsync --recursive ~/sandmle-runs/r1 gs://b/r1"
    assert cmds[-1] == ["gcloud", "storage", "rsync", "--recursive", "gs://b/r1", "runs/r1"]
    (tail,) = _dry("logs.sh", "--run", "r1", "--worker", "all", "--follow", "--lines", "20")
    assert "--worker=all" in tail and _opt(tail, "command") == "tail -n 20 -f ~/sandmle-logs/r1.log"
    (delete,) = _dry("delete.sh")
    assert delete[4:6] == ["delete", "sandmle-pod"] and "--quiet" in delete


SCRIPTS = sorted(f for f in os.listdir(TPU) if f.endswith(".sh") and f != "lib.sh")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_usage_only(script):
    proc = subprocess.run(["bash", os.path.join(TPU, script), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr
    assert f"tpu/{script} --name" in proc.stdout
    assert "set -euo" not in proc.stdout and "#" not in proc.stdout.split("\n")[0]


def test_delete_asks_and_refuses_without_a_terminal():
    base = ["bash", os.path.join(TPU, "delete.sh"), "--name", "p", "--zone", "z"]
    # No terminal and no --yes: refused before any gcloud call (none is on PATH here
    # anyway; the message proves it stopped at the question).
    proc = subprocess.run(base, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "refusing without --yes" in proc.stderr
    assert not proc.stdout
    # On a terminal (script(1) gives it one), an answer other than yes does nothing.
    if shutil.which("script"):
        proc = subprocess.run(["script", "-qec", shlex.join(base), "/dev/null"], input="n\n",
                              capture_output=True, text=True, timeout=60)
        assert "delete TPU VM p in z" in proc.stdout and "? [y/N]" in proc.stdout
        assert "not confirmed; nothing done" in proc.stdout
    (cmd,) = _dry("delete.sh", "--yes")
    assert cmd[4:6] == ["delete", "sandmle-pod"]


@pytest.mark.parametrize("script,args,message", [
    ("create.sh", [], "--type ACCELERATOR_TYPE is required"),
    ("launch.sh", ["--run", "r1"], "--config configs/x.py[:arg] is required"),
    ("launch.sh", ["--config", "c.py", "--run", "bad name"], "--run may use letters"),
    ("sync.sh", ["--run", "r1", "--dest", "/local"], "--dest must be a gs:// URL"),
    ("logs.sh", ["--bogus"], "unknown flag --bogus"),
])
def test_bad_flags_are_named(script, args, message):
    proc = subprocess.run(["bash", os.path.join(TPU, script), *COMMON, *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr and not proc.stdout


def test_name_and_zone_required():
    proc = subprocess.run(["bash", os.path.join(TPU, "delete.sh"), "--dry_run"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--name TPU_NAME is required" in proc.stderr


def test_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck; .ci/run does)")
    scripts = sorted(os.path.join(d, f) for d in ("tpu", "benchmarks")
                     for f in os.listdir(os.path.join(ROOT, d)) if f.endswith(".sh"))
    assert "benchmarks/gpu_figures.sh" in scripts
    proc = subprocess.run(["shellcheck", "-x", *scripts], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
