"""sandmle-export: a train checkpoint's policy -> a Hugging Face directory.

  sandmle-export --checkpoint=/tmp/run --out=/tmp/run_hf             # the newest step
  sandmle-export --checkpoint=/tmp/run/checkpoints/40 --out=/tmp/hf40 --dtype=bfloat16

Writes model.safetensors (sharded with an index past 5 GiB) and config.json (Qwen3 /
Qwen3-MoE, transformers' names and layout), the run's tokenizer (tokenizer.json,
tokenizer_config.json) with the Qwen3 chat template (chat_template.jinja) and a
generation_config.json whose eos ids are the chat format's stop tokens. transformers'
`AutoModelForCausalLM.from_pretrained(out)` loads it and computes sandmle's logits (fp32:
equal within 1e-4, tests/test_export.py). Only the policy's parameters are read from the
checkpoint (never the optimizer state). The folder is written as `<out>.partial` and
renamed when complete; an existing --out is refused unless --overwrite.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from absl import flags

from sandmle.errors import UserError

def export(checkpoint: str, out: str | os.PathLike, step: int | None = None,
           dtype: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Exports a checkpoint's policy to a Hugging Face directory; returns what was written."""
    import ml_collections
    import numpy as np

    from sandmle import build
    from sandmle.eval_sources import load_checkpoint
    from sandmle.models import hf
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"{out} exists and is not empty; choose a new --out or --overwrite")
    every = ml_collections.ConfigDict({"mesh": {"shape": (-1, 1, 1, 1)}})
    mesh, rules = build.mesh_and_rules(every)
    model, tok, _, ckpt_dir, step = load_checkpoint(checkpoint, step, mesh, rules)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    files = hf.save_pretrained(model, tmp, dtype=np.dtype(dtype) if dtype else None)
    tok.hf.save_pretrained(tmp)
    from transformers import GenerationConfig
    GenerationConfig(eos_token_id=list(tok.stop_ids), pad_token_id=tok.pad_id,
                     bos_token_id=None).save_pretrained(tmp)
    (tmp / "sandmle_export.json").write_text(json.dumps(
        {"checkpoint": str(ckpt_dir), "step": step, "dtype": dtype or "float32"}, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return {"out": str(out), "step": step, "files": sorted(os.listdir(out)),
            "weights": files}


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    fv = flags.FLAGS
    if not fv.checkpoint or not fv.out:
        raise UserError("--checkpoint=RUN_OR_STEP and --out=DIR are required")
    from sandmle import resume
    resume.check_workdir(str(Path(fv.out).resolve().parent), flag="--out's folder")
    done = export(fv.checkpoint, fv.out, fv.step, fv.dtype, fv.overwrite)
    print(f"exported step {done['step']} to {done['out']}: {', '.join(done['files'])}")


def _define_flags() -> None:
    # Defined when the command runs, not on import: other tools name flags alike.
    flags.DEFINE_string("checkpoint", None, "a train workdir, its checkpoints/ folder or one "
                        "step folder")
    flags.DEFINE_integer("step", None, "the step to export (default: the newest that "
                         "restores)")
    flags.DEFINE_string("out", None, "the Hugging Face directory to write")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"],
                      "dtype of the saved tensors")
    flags.DEFINE_bool("overwrite", False, "replace an existing --out")


def run() -> None:
    """Console script `sandmle-export`."""
    from sandmle import cli
    _define_flags()
    cli.run_app(main, prog="sandmle-export", doc=__doc__)


if __name__ == "__main__":
    run()
