"""The interpreter's tree stays visible to jobs even when it lives under a scratch dir."""

import os

from sandmle.sandbox import isolation


def test_outermost_dirs_drops_nested_and_missing(tmp_path):
    a = tmp_path / "venv"
    (a / "lib" / "site-packages").mkdir(parents=True)
    b = tmp_path / "other"
    b.mkdir()
    got = isolation.outermost_dirs([str(a / "lib" / "site-packages"), str(a), str(b),
                                    str(tmp_path / "missing"), ""])
    assert got == sorted([os.path.realpath(a), os.path.realpath(b)])


def test_only_paths_inside_scratch_dirs_are_rebound():
    assert isolation._under_scratch("/tmp/ci/.venv")
    assert not isolation._under_scratch("/tmp")  # a whole scratch dir would undo its cover
    assert not isolation._under_scratch("/root/.pyenv/versions/3.11.7")
