"""Config loading for every entry point: absl flags, overrides, the resolved copy.

Entry points define their flags with `define_flags()`:

  --config=configs/x.py:ARG     the file's `get_config(ARG)`, locked after loading
  --config.rl.lr=1e-6           overrides (any depth; type-checked against the field)
  --workdir=DIR                 where the run writes everything
  --multihost                   call jax.distributed.initialize (pod / cluster)

A locked ConfigDict refuses unknown fields, so a misspelt override stops the run
with a message naming the field and what the config does have (`parse_flags`); a
missing or failing config file gets one line too (`ConfigError`, a `UserError`).
`write_config` stores the resolved config as `config.json` and as `config.py`,
a config file that `--config=<workdir>/config.py` loads back unchanged.
`sandmle.resume` checks a workdir and a resumed run's config before anything is
written.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from sandmle.errors import UserError, one_line

CONFIG_JSON = "config.json"
CONFIG_PY = "config.py"


class ConfigError(UserError, ValueError):
    """The config file is missing or its `get_config` failed."""


class ConfigOverrideError(ConfigError):
    """A `--config.a.b=v` override names no field, or a value of the wrong type."""


def define_flags(flag_values: flags.FlagValues = flags.FLAGS,
                 workdir_required: bool = True) -> None:
    """Defines --config (with overrides), --workdir and --multihost."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file `path.py[:arg]`; override fields with "
        "--config.a.b=value.", flag_values=flag_values, lock_config=True)
    flags.DEFINE_string("workdir", None, "Run directory (config, metrics, checkpoints).",
                        flag_values=flag_values, required=workdir_required)
    flags.DEFINE_bool("multihost", False, "Initialise jax.distributed (multi-host runs); "
                      "config.multihost does the same.", flag_values=flag_values)


def _split_spec(argv: Sequence[str]) -> tuple[str | None, list[tuple[str, str]]]:
    """Finds --config=SPEC and the --config.x=v overrides in argv."""
    spec, overrides = None, []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(args):
            spec = args[i + 1]
            i += 1
        elif arg.startswith("--config."):
            name, _, value = arg[len("--config."):].partition("=")
            overrides.append((name, value))
        i += 1
    return spec, overrides


def _explain_override(config: ml_collections.ConfigDict, name: str) -> str | None:
    """Why `name` is not a field of `config` (None when it is one)."""
    node: Any = config
    walked = []
    for part in name.split("."):
        if isinstance(node, (ml_collections.ConfigDict, dict)) and part in node:
            node = node[part]
            walked.append(part)
            continue
        where = "config" + "".join("." + w for w in walked)
        if not isinstance(node, (ml_collections.ConfigDict, dict)):
            return f"{where} is a {type(node).__name__}, not a config block"
        keys = sorted(node.keys())
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f" Did you mean {where}.{close[0]}?" if close else ""
        return (f"{where} has no field {part!r}.{hint} "
                f"Fields of {where}: {', '.join(keys) or '(none)'}")
    return None


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads `path.py[:arg]` and applies `--config.a.b=v` style overrides.

    The same parser as the command line, so a sweep or a test gets what the flag
    would give. Raises ConfigOverrideError for an unknown field or bad value.
    """
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True)
    argv = ["load_config", f"--config={spec}"]
    for item in overrides:
        argv.append(item if item.startswith("--") else f"--config.{item}")
    # config_flags also reads overrides from sys.argv: show it only these.
    saved = sys.argv
    sys.argv = argv
    try:
        _parse(fv, argv)
    finally:
        sys.argv = saved
    return fv.config


def _config_path(spec: str) -> str:
    return spec.split(":", 1)[0]


def check_config_file(spec: str) -> None:
    """Raises ConfigError unless `spec`'s file (`path.py[:arg]`) exists."""
    path = _config_path(spec)
    if os.path.isfile(path):
        return
    folder = os.path.dirname(path) or "."
    hint = ""
    if os.path.isdir(folder):
        near = difflib.get_close_matches(os.path.basename(path), [
            n for n in os.listdir(folder) if n.endswith(".py")], n=1)
        if near:
            hint = f"; did you mean {os.path.join(os.path.dirname(path), near[0])}?"
    what = "is a directory" if os.path.isdir(path) else "does not exist"
    raise ConfigError(f"config file {path!r} {what}{hint} "
                      f"(--config=path/to/config.py[:arg])")


def describe_config_failure(spec: str, error: BaseException) -> str:
    """One line for an exception raised while loading the config file."""
    origin: BaseException = error
    # absl wraps ml_collections' ValueError("Error whilst parsing config file: <the
    # traceback>"), which wraps what get_config raised: report that one.
    while origin.__context__ is not None and (
            isinstance(origin, flags.Error) or "Error whilst parsing config file" in str(origin)):
        origin = origin.__context__
    if isinstance(origin, flags.Error):  # no underlying exception: absl's text says it
        return one_line(str(origin).split("Traceback")[0])
    where = ""
    config_file = os.path.abspath(_config_path(spec))
    if isinstance(origin, SyntaxError) and origin.filename:
        where = f" ({origin.filename}:{origin.lineno})"
    else:
        frames = [f for f in traceback.extract_tb(origin.__traceback__)
                  if os.path.abspath(f.filename) == config_file]
        if frames:
            where = f" ({_config_path(spec)}:{frames[-1].lineno})"
    kind = "" if isinstance(origin, (ValueError, UserError)) else f"{type(origin).__name__}: "
    return f"{kind}{one_line(origin)}{where}"


def _parse(fv: flags.FlagValues, argv: Sequence[str]) -> list[str]:
    spec, overrides = _split_spec(argv[1:])
    if spec is not None:
        check_config_file(spec)
    try:
        return fv(list(argv))
    except Exception as e:  # absl/ml_collections raise several kinds here
        if spec is None:
            raise
        file_failed = str(e).startswith("flag --config=")
        if file_failed or (not overrides and not isinstance(e, flags.Error)):
            # The config file itself failed to load (get_config raised).
            raise ConfigError(f"--config={spec}: "
                              f"{describe_config_failure(spec, e)}") from None
        if not overrides:
            raise  # another flag's problem (e.g. an unknown flag): absl's text says it
        try:
            base = load_config(spec)
        except Exception:
            raise e from None
        for name, value in overrides:
            why = _explain_override(base, name)
            if why:
                raise ConfigOverrideError(
                    f"bad override --config.{name}={value}: {why}") from None
        raise ConfigOverrideError(f"bad config override: {one_line(e)}") from None


def parse_flags(argv: list[str]) -> list[str]:
    """`flags_parser` for `cli.run_app`: config problems raise ConfigError (one line)."""
    return _parse(flags.FLAGS, argv)


class _QuietLibraries:
    """Drops INFO records of chatty libraries (Orbax logs every file it renames)."""

    def __init__(self, prefixes: Sequence[str], min_level: int) -> None:
        self.markers = tuple(f"{os.sep}{p}{os.sep}" for p in prefixes)
        self.min_level = min_level

    def filter(self, record: Any) -> bool:
        return (record.levelno >= self.min_level
                or not any(m in record.pathname for m in self.markers))


def quiet_library_logs(prefixes: Sequence[str] = ("orbax", "jax"),
                       min_level: int = 30) -> None:
    """Keeps only records at `min_level` or above (default: warnings) from `prefixes`."""
    # On absl's handler, so records of libraries logging through the standard
    # `logging` module (jax) are filtered as well as those through absl's (orbax).
    logging.get_absl_handler().addFilter(_QuietLibraries(prefixes, min_level))


# -- the resolved config on disk --------------------------------------------

def _py_literal(value: Any, indent: int) -> str:
    pad = " " * indent
    if isinstance(value, ml_collections.ConfigDict):
        value = {k: value[k] for k in value.keys()}
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}    {k!r}: {_py_literal(v, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_py_literal(v, indent + 4) for v in value)
        if isinstance(value, tuple):
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        return f"[{inner}]"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({repr(value)!r})"
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    raise TypeError(f"{type(value).__name__} value {value!r} has no Python literal")


def _placeholders(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, str]:
    """Dotted names of None fields that are typed placeholders -> their type name."""
    out = {}
    for key in config.keys():
        field = config._fields.get(key)  # pylint: disable=protected-access
        name = f"{prefix}{key}"
        if isinstance(field, ml_collections.FieldReference):
            ftype = field.get_type()
            if field.get() is None and ftype in (int, float, str, bool, tuple, list, dict):
                out[name] = ftype.__name__
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out.update(_placeholders(value, name + "."))
    return out


def config_to_python(config: ml_collections.ConfigDict) -> str:
    """Python source of a config file whose `get_config()` rebuilds `config`."""
    try:
        body = _py_literal(config, 4)
    except TypeError as e:
        raise TypeError(f"config cannot be written as Python: {e}") from None
    lines = [
        '"""Resolved config of a sandmle run (written by sandmle.config_lib).',
        "",
        "Load it again with --config=<this file>; overrides work as usual.",
        '"""',
        "",
        "import ml_collections",
        "",
        "",
        "def get_config(arg=None):",
        "    del arg  # The resolved config takes no argument.",
        f"    config = ml_collections.ConfigDict({body})",
    ]
    for name, tname in sorted(_placeholders(config).items()):
        # Keep optional fields overridable: a bare None would refuse a value.
        parent, _, leaf = name.rpartition(".")
        target = "config" + ("." + parent if parent else "")
        lines.append(f"    {target}.{leaf} = ml_collections.config_dict.placeholder({tname})")
    lines += ["    return config", ""]
    return "\n".join(lines)


def config_to_json(config: ml_collections.ConfigDict) -> str:
    """The config as indented JSON (non-JSON values as their repr)."""
    return config.to_json_best_effort(indent=2, sort_keys=True)


def _write_atomic(path: str, text: str) -> None:
    # A run killed mid-write keeps the previous file whole.
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> tuple[str, str]:
    """Writes `config.json` and `config.py` into `workdir`; returns both paths."""
    workdir = os.fspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    json_path = os.path.join(workdir, CONFIG_JSON)
    py_path = os.path.join(workdir, CONFIG_PY)
    _write_atomic(json_path, config_to_json(config) + "\n")
    try:
        source = config_to_python(config)
    except TypeError as e:
        # JSON still holds the run's settings; the Python form needs literals only.
        logging.warning("not writing %s: %s", py_path, e)
        return json_path, ""
    _write_atomic(py_path, source)
    return json_path, py_path


def read_config_json(workdir: str | os.PathLike) -> dict[str, Any]:
    """Reads the `config.json` a run wrote."""
    with open(os.path.join(os.fspath(workdir), CONFIG_JSON), encoding="utf-8") as f:
        return json.load(f)
