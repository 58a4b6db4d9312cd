"""sandmle-export: a checkpoint's policy -> an HF directory that transformers loads with
sandmle's logits (fp32, within 1e-4), with the tokenizer and the Qwen3 chat template."""

from __future__ import annotations

import importlib.util
import json

import pytest

import eval_helpers as E
from sandmle.errors import UserError

# One worker runs this module, so its exported model is built once (pytest.ini).
pytestmark = [pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="needs torch (pip install -e '.[torch]')"),
              pytest.mark.xdist_group("export")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return E.make_tiny_run(tmp_path_factory.mktemp("export") / "run")


def test_transformers_loads_the_export_with_equal_logits(run, tmp_path):
    out = tmp_path / "hf"
    r = E.export_parity.parity(str(run), out, length=40)
    assert r["step"] == 3
    assert r["max_abs_dlogit"] <= 1e-4, r
    assert r["logit_scale"] > 0.1  # not trivially zero logits
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "generation_config.json"):
        assert (out / name).is_file(), name
    from sandmle.models.tokenizer import ChatTokenizer
    tok = ChatTokenizer.from_pretrained(out)  # checks the template renders sandmle's format
    gen = json.loads((out / "generation_config.json").read_text())
    assert sorted(gen["eos_token_id"]) == sorted(tok.stop_ids)
    assert json.loads((out / "sandmle_export.json").read_text())["step"] == 3


def test_export_refuses_to_overwrite_and_bad_checkpoints(run, tmp_path):
    from sandmle.export import export
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        export(str(run), out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(UserError, match="no checkpoint"):
        export(str(tmp_path / "nope"), tmp_path / "o")
    with pytest.raises(UserError, match="no checkpoint step 7"):
        export(str(run), tmp_path / "o2", step=7)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o2.partial").exists()
