"""sandmle-params: the parameter count of every Qwen3 preset (shapes only, nothing allocated).

    python -m sandmle.models.params                 # all presets
    python -m sandmle.models.params --preset=qwen3-8b --preset=tiny
    sandmle-params --hf_config=/path/to/checkpoint  # a checkpoint's config.json
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from sandmle import cli
from sandmle.errors import UserError

from sandmle.models.config import Qwen3Config, count_params, get_preset, preset_names

_PRESET = flags.DEFINE_multi_string("preset", None, "Preset name(s); default: all.")
_HF_CONFIG = flags.DEFINE_string("hf_config", None, "An HF config.json or checkpoint dir.")


def format_table(configs: Sequence[tuple[str, Qwen3Config]]) -> str:
    """One line per config: total and active parameters, exact and in billions."""
    lines = [f"{'model':<16} {'total':>15} {'active':>15} {'total(B)':>9} {'active(B)':>9}"]
    for name, cfg in configs:
        c = count_params(cfg)
        lines.append(f"{name:<16} {c['total']:>15,} {c['active']:>15,} "
                     f"{c['total'] / 1e9:>9.3f} {c['active'] / 1e9:>9.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        if _HF_CONFIG.value:
            configs = [(_HF_CONFIG.value, Qwen3Config.from_hf(_HF_CONFIG.value))]
        else:
            configs = [(n, get_preset(n)) for n in (_PRESET.value or preset_names())]
    except (ValueError, KeyError, OSError) as e:  # an unknown preset or unreadable config
        raise UserError(str(e)) from None
    print(format_table(configs))


def run() -> None:
    """Console script entry point (sandmle-params)."""
    cli.run_app(main, prog="sandmle-params", doc=__doc__)


if __name__ == "__main__":
    run()
