"""Parity of sandmle's Qwen3 with transformers, and the HF round trip."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_fixtures import DENSE_CASES, MOE_CASES, hf_logits, make_hf_model, padded_batch  # noqa: E402

from sandmle.models import hf, qwen3  # noqa: E402

TOL = 1e-4  # Acceptance bound in fp32; never loosen.

CASES = [("dense", n, f) for n, f in DENSE_CASES.items()] + \
        [("moe", n, f) for n, f in MOE_CASES.items()]


@pytest.fixture(scope="module", params=CASES, ids=[c[1] for c in CASES])
def saved(request, tmp_path_factory):
    kind, name, fields = request.param
    model = make_hf_model(kind, fields)
    path = tmp_path_factory.mktemp(name) / "hf"
    model.save_pretrained(path)
    return kind, model, path


def _valid_max_diff(a, b, mask):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))[mask]))


@pytest.mark.parametrize("moe_impl", ["ragged", "dense"])
def test_logits_match_transformers(saved, moe_impl):
    kind, hf_model, path = saved
    if kind == "dense" and moe_impl == "dense":
        pytest.skip("moe_impl only matters for MoE models")
    model = hf.from_pretrained(path, moe_impl=moe_impl)
    tokens, positions, mask = padded_batch(model.config.vocab_size)
    out = hf_logits(hf_model, tokens, positions, mask, output_router_logits=kind == "moe")
    logits, aux = model(tokens, positions, mask)
    diff = _valid_max_diff(logits, out.logits.numpy(), mask)
    print(f"{path.parent.name} [{moe_impl}]: max |logits diff| = {diff:.2e}")
    assert diff <= TOL
    if kind == "moe":
        # Same (unscaled) load-balancing loss over the real tokens.
        np.testing.assert_allclose(float(aux["router_aux_loss"]), float(out.aux_loss),
                                   rtol=1e-5, atol=1e-6)
    else:
        assert float(aux["router_aux_loss"]) == 0.0


def test_export_reloads_in_transformers_bit_exact(saved, tmp_path):
    from safetensors.numpy import load_file
    kind, hf_model, path = saved
    model = hf.from_pretrained(path)
    files = hf.save_pretrained(model, tmp_path / "export")
    assert "config.json" in files
    original = load_file(str(path / "model.safetensors"))
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert sorted(original) == sorted(exported)
    for name, a in original.items():
        assert a.dtype == exported[name].dtype and a.shape == exported[name].shape, name
        assert np.array_equal(a, exported[name]), name

    cls = transformers.Qwen3MoeForCausalLM if kind == "moe" else transformers.Qwen3ForCausalLM
    reloaded = cls.from_pretrained(tmp_path / "export", attn_implementation="eager").eval()
    tokens, positions, mask = padded_batch(model.config.vocab_size, seed=1)
    a = hf_logits(hf_model, tokens, positions, mask).logits
    b = hf_logits(reloaded, tokens, positions, mask).logits
    assert torch.equal(a, b)


def test_bf16_round_trip_bit_exact(tmp_path):
    from safetensors.numpy import load_file
    hf_model = make_hf_model("moe", MOE_CASES["moe_norm_topk_mlp_only"]).to(torch.bfloat16)
    hf_model.save_pretrained(tmp_path / "in")
    model = hf.from_pretrained(tmp_path / "in", param_dtype="bfloat16", dtype="bfloat16")
    assert str(model.model.embed_tokens[...].dtype) == "bfloat16"
    hf.save_pretrained(model, tmp_path / "out", max_shard_bytes=100_000)
    assert os.path.exists(tmp_path / "out" / "model.safetensors.index.json")
    original = load_file(str(tmp_path / "in" / "model.safetensors"))
    reread = hf.CheckpointReader(tmp_path / "out")
    assert sorted(reread.keys()) == sorted(original)
    for name, a in original.items():
        b = reread.get(name)
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint16), b.view(np.uint16)), name
    # The sharded export loads back into sandmle too.
    again = hf.from_pretrained(tmp_path / "out", param_dtype="bfloat16", dtype="bfloat16")
    tokens, positions, mask = padded_batch(model.config.vocab_size)
    np.testing.assert_array_equal(np.asarray(model(tokens, positions, mask)[0]),
                                  np.asarray(again(tokens, positions, mask)[0]))


def test_config_from_hf_objects_and_paths(saved):
    kind, hf_model, path = saved
    a = qwen3.Qwen3Config.from_hf(hf_model.config)
    b = qwen3.Qwen3Config.from_hf(path)
    c = qwen3.Qwen3Config.from_hf(str(path / "config.json"))
    assert a == b == c
    assert a.is_moe == (kind == "moe")
    assert qwen3.Qwen3Config.from_hf(a.to_hf()) == a


def test_rope_frequencies_match_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from sandmle.models.rope import rope_frequencies
    variants = [
        {"rope_type": "default", "rope_theta": 1e6},
        {"rope_type": "linear", "rope_theta": 1e4, "factor": 3.0},
        {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
         "original_max_position_embeddings": 32768},
        {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    ]
    for rope in variants:
        hf_cfg = transformers.Qwen3Config(hidden_size=256, num_attention_heads=4, head_dim=128,
                                          num_key_value_heads=4,
                                          max_position_embeddings=131072,
                                          rope_parameters=dict(rope))
        ours = qwen3.Qwen3Config.from_hf(hf_cfg)
        inv, scale = rope_frequencies(ours)
        fn = ROPE_INIT_FUNCTIONS[rope["rope_type"]] if rope["rope_type"] != "default" else None
        if fn is None:
            ref = transformers.models.qwen3.modeling_qwen3.Qwen3RotaryEmbedding(hf_cfg)
            ref_inv, ref_scale = ref.inv_freq, ref.attention_scaling
        else:
            ref_inv, ref_scale = fn(hf_cfg, None)
        np.testing.assert_allclose(inv, ref_inv.numpy(), rtol=1e-6, err_msg=str(rope))
        assert abs(scale - float(ref_scale)) < 1e-7, rope


def test_bad_checkpoints_give_clear_errors(saved, tmp_path):
    kind, hf_model, path = saved
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        hf.CheckpointReader(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((path / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        hf.from_pretrained(broken)
    # A checkpoint for a different architecture: names the tensor and both shapes.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    import json
    cfg = json.loads((path / "config.json").read_text())
    cfg["hidden_size"] += 8
    (wrong / "config.json").write_text(json.dumps(cfg))
    (wrong / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="has shape"):
        hf.from_pretrained(wrong)


def test_legacy_config_and_extra_tensors(tmp_path):
    """A transformers-4.x style config.json (top-level rope_theta, rope_scaling) and a tied
    checkpoint that also stores lm_head.weight and rotary buffers still load."""
    import json

    from safetensors.numpy import load_file, save_file
    fields = dict(DENSE_CASES["gqa2_headdim32_tied_oddvocab"])
    hf_model = make_hf_model("dense", fields)
    hf_model.save_pretrained(tmp_path / "ckpt")
    tensors = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(16, np.float32)
    save_file(tensors, str(tmp_path / "ckpt" / "model.safetensors"))
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    theta = cfg.pop("rope_parameters")["rope_theta"]
    cfg.update(rope_theta=theta, rope_scaling=None, torch_dtype="float32")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    model = hf.from_pretrained(tmp_path / "ckpt")
    assert model.config.rope_theta == theta and model.config.rope_type == "default"
    tokens, positions, mask = padded_batch(model.config.vocab_size)
    ref = hf_logits(hf_model, tokens, positions, mask).logits.numpy()
    assert _valid_max_diff(model(tokens, positions, mask)[0], ref, mask) <= TOL

    legacy_yarn = dict(cfg, rope_scaling={"type": "yarn", "factor": 4.0,
                                          "original_max_position_embeddings": 1024})
    c = qwen3.Qwen3Config.from_hf(legacy_yarn)
    assert c.rope_type == "yarn" and dict(c.rope_scaling)["factor"] == 4.0
    assert c.rope_theta == theta


def test_critic_loads_trunk_from_checkpoint(saved):
    import jax
    from flax import nnx
    kind, hf_model, path = saved
    if kind == "moe":
        pytest.skip("one shape suffices")
    policy = hf.from_pretrained(path)
    critic = hf.from_pretrained(path, model_cls=qwen3.Qwen3Critic)
    for a, b in zip(jax.tree.leaves(nnx.state(policy.model)), jax.tree.leaves(nnx.state(critic.model))):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    tokens, positions, mask = padded_batch(policy.config.vocab_size)
    values, _ = critic(tokens, positions, mask)
    np.testing.assert_array_equal(np.asarray(values), 0.0)
    _, aux = policy(tokens, positions, mask, return_hidden=True)
    critic.value_head.kernel[...] = np.linspace(-1, 1, policy.config.hidden_size, dtype=np.float32)
    values, _ = critic(tokens, positions, mask)
    np.testing.assert_allclose(np.asarray(values), np.asarray(critic.value_head(aux["hidden"])),
                               atol=1e-5)
