r"""sandmle-export round trip: a checkpoint's policy in transformers vs in sandmle.

    python experiments/export_parity.py --checkpoint=/tmp/run          # a train workdir
    python experiments/export_parity.py --scratch=/tmp/x               # a tiny run made here

Exports the checkpoint with `sandmle.export.export`, loads the directory with transformers'
AutoModelForCausalLM and AutoTokenizer (its chat template), renders a chat prompt with the
exported template, and prints the largest |logit difference| between transformers and
sandmle's model restored from the same checkpoint (fp32; the goal is <= 1e-4), side by
side with the bound. Without --checkpoint it first writes a tiny run (test tokenizer, a
1-layer Qwen3 whose parameters differ from any initialisation, an Orbax step as the train
job saves it) under --scratch.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import flags  # noqa: E402

from sandmle import cli  # noqa: E402

flags.DEFINE_string("checkpoint", None, "a train workdir or checkpoint step folder "
                    "(default: make a tiny run under --scratch)")
flags.DEFINE_string("scratch", None, "folder for the tiny run and the export")
flags.DEFINE_integer("num_tokens", 48, "prompt tokens compared", lower_bound=1)
TOLERANCE = 1e-4


def make_tiny_run(workdir: str | os.PathLike, seed: int = 0, step: int = 3) -> Path:
    """A train-job-shaped workdir: config.json, tokenizer/, checkpoints/<step>/ holding a
    TrainState whose params['policy'] are a 1-layer Qwen3 moved off its initialisation."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from configs import tiny_cpu
    from sandmle import build, checkpoint, config_lib
    from sandmle.models.tiny_tokenizer import build_test_tokenizer
    from sandmle.rl.step import TrainState
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    build_test_tokenizer(work / build.TOKENIZER_DIR, vocab_size=1024, seed=seed)
    config = tiny_cpu.get_config(f"quick,seed={seed}")
    config.mesh.shape = (-1, 1, 1, 1)
    config_lib.write_config(config, work)
    tok = build.tokenizer(config, work)
    mesh, rules = build.mesh_and_rules(config)
    model = build.policy_model(config, tok.vocab_size, mesh, rules)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.02 * jax.random.normal(k, x.shape, x.dtype)
                                       for x, k in zip(leaves, keys)])
    state = TrainState(step=jnp.asarray(step, jnp.int32), params={"policy": params},
                       opt_state={}, extra={"policy": {}})
    with checkpoint.CheckpointManager(work / "checkpoints", async_save=False) as ckpt:
        ckpt.save(step, state, loop_state={"phase": "done", "step": step}, config=config)
    return work


def parity(checkpoint: str, out: str | os.PathLike, length: int = 48) -> dict[str, float]:
    """Exports `checkpoint` to `out`; max |logit difference| transformers vs sandmle."""
    import ml_collections
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sandmle import build
    from sandmle.eval_sources import load_checkpoint
    from sandmle.export import export
    done = export(checkpoint, out, overwrite=True)
    hf_tok = AutoTokenizer.from_pretrained(out)
    text = hf_tok.apply_chat_template(
        [{"role": "system", "content": "You are an ML engineer."},
         {"role": "user", "content": "Train a model on train.csv and write submission.csv."}],
        tokenize=False, add_generation_prompt=True)
    ids = hf_tok(text, add_special_tokens=False)["input_ids"]
    ids = (ids * (length // max(len(ids), 1) + 1))[:length]
    model_hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = model_hf(torch.tensor([ids])).logits[0].numpy()
    mesh, rules = build.mesh_and_rules(ml_collections.ConfigDict({"mesh": {"shape": (-1, 1, 1, 1)}}))
    model = load_checkpoint(checkpoint, done["step"], mesh, rules)[0]
    tokens = np.asarray([ids], np.int32)
    ours, _ = model(tokens, np.arange(len(ids), dtype=np.int32)[None], np.ones_like(tokens, bool))
    diff = float(np.abs(np.asarray(ours[0]) - theirs).max())
    return {"max_abs_dlogit": diff, "logit_scale": float(np.abs(theirs).max()),
            "tokens": len(ids), "step": done["step"]}


def main(argv):
    del argv
    fv = flags.FLAGS
    scratch = Path(fv.scratch or tempfile.mkdtemp(prefix="export_parity_"))
    ckpt = fv.checkpoint or str(make_tiny_run(scratch / "run"))
    r = parity(ckpt, scratch / "hf", fv.num_tokens)
    print(f"exported step {r['step']} of {ckpt} -> {scratch / 'hf'}")
    print(f"max |dlogit| transformers vs sandmle over {r['tokens']} tokens: "
          f"{r['max_abs_dlogit']:.2e}   (bound {TOLERANCE:.0e}; logits up to "
          f"{r['logit_scale']:.2f})   {'OK' if r['max_abs_dlogit'] <= TOLERANCE else 'FAIL'}")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
