"""What every sandmle console script shares: --help, one-line errors, Ctrl-C.

A console script's entry function is

    def run() -> None:
        cli.run_app(main, prog="sandmle-foo", doc=__doc__)

and gets, without more code:

- `--help` (also `-h`, `-?`, `--helpshort`): the tool's docstring and its own flags
  with their defaults on stdout, exit 0 (absl's own `--help` exits 1 and lists no
  flags defined outside `__main__`); `--helpfull` adds absl's flags.
- One line on stderr and exit 2 for bad input: a flag that does not parse, a
  `sandmle.errors.UserError` (or `app.UsageError`) raised while parsing or in `main`.
- Ctrl-C outside a loop that handles it (`sandmle.preemption`): one line, exit 130.
- No "Event loop is closed" tracebacks from Orbax's leftover reads after a failure.

Anything else keeps its traceback: it is a bug, not bad input.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import app, flags

from sandmle.errors import UserError, one_line

_HELP = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")
_HELPFULL = ("--helpfull", "-helpfull")


def fail(prog: str, message: object, code: int = 2) -> NoReturn:
    """Prints `prog: message` as one stderr line and exits with `code`."""
    sys.stdout.flush()
    print(f"{prog}: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(code)


def _drop_closed_loop_noise() -> None:
    """Silences tensorstore callbacks that land on an event loop Orbax already closed.

    When an Orbax read fails (a corrupt checkpoint) or is interrupted, Orbax closes
    its per-call event loop while tensorstore still completes the other reads; each
    completion then reports "RuntimeError: Event loop is closed" with a traceback
    through sys.unraisablehook. They say nothing beyond the error Orbax raised.
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)
    sys.unraisablehook = hook


def check_flag(name: str, check: Callable[[Any], Any],
               flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Validates flag `name` at parse time with `check(value)` (not called for None).

    A ValueError (or UserError) that `check` raises becomes the flag's one-line error
    (exit 2 under `run_app`), so a check can be the very function that later uses the
    value (e.g. a preset lookup) rather than a second copy of its rules.
    """
    def validate(value: Any) -> bool:
        if value is None:
            return True
        try:
            check(value)
        except (ValueError, UserError) as e:
            raise flags.ValidationError(one_line(e)) from None
        return True
    flags.register_validator(name, validate, flag_values=flag_values)


def positive_ints(values: Sequence[str]) -> list[int]:
    """A list flag's items as integers >= 1 (ValueError naming the first that is not)."""
    out = []
    for v in values:
        try:
            n = int(v)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{v!r} is not an integer >= 1")
        out.append(n)
    if not out:
        raise ValueError("give at least one value")
    return out


def _help_request(argv: Sequence[str]) -> str | None:
    for arg in argv[1:]:
        if arg == "--":
            return None
        if arg in _HELPFULL:
            return "full"
        if arg in _HELP or arg.startswith("--help="):
            return "short"
    return None


def _flag_lines(flag: flags.Flag) -> list[str]:
    name = f"--[no]{flag.name}" if isinstance(flag, flags.BooleanFlag) else f"--{flag.name}"
    if flag.default is None or flag.default == []:
        default = "none"
    else:
        default = flag.default_as_str or repr(flag.default)
    body = textwrap.fill(" ".join(str(flag.help).split()), width=86,
                         initial_indent=f"  {name}: ", subsequent_indent="      ")
    return [body, f"      (default: {default})"]


def help_text(prog: str, doc: str | None, flag_values: flags.FlagValues = flags.FLAGS,
              full: bool = False) -> str:
    """The tool's usage text: its docstring, then its flags with their defaults.

    "Its flags" are those defined outside absl (`full` adds absl's logging and
    debugging flags too).
    """
    lines = [(doc or f"USAGE: {prog} [flags]").strip("\n"), ""]
    own = [f for module, fs in sorted(flag_values.flags_by_module_dict().items())
           if full or not module.startswith("absl") for f in fs]
    seen: set[str] = set()
    if own:
        lines.append("flags:")
        for flag in sorted(own, key=lambda f: f.name):
            if flag.name not in seen:
                seen.add(flag.name)
                lines += _flag_lines(flag)
    if not full:
        lines += ["", f"{prog} --helpfull also lists absl's logging and debugging flags."]
    return "\n".join(lines).rstrip() + "\n"


def run_app(main: Callable[[list[str]], Any], *, prog: str | None = None,
            doc: str | None = None,
            flags_parser: Callable[[list[str]], Any] | None = None,
            flag_values: flags.FlagValues = flags.FLAGS,
            argv: Sequence[str] | None = None) -> None:
    """Runs `main` as a console script with sandmle's help and error handling.

    Args:
      main: absl-style `main(argv)`; its return value is the exit status.
      prog: the command's name in messages (default: argv[0]'s basename).
      doc: the usage text `--help` prints first (pass the module's `__doc__`).
      flags_parser: parses argv into `flag_values` (default: `flag_values(argv)`);
        it may raise `UserError` for bad input.
      flag_values: the flags the tool defines.
      argv: the command line (default: sys.argv).
    """
    argv = list(sys.argv if argv is None else argv)
    prog = prog or os.path.basename(argv[0])
    wanted = _help_request(argv)
    if wanted:
        sys.stdout.write(help_text(prog, doc, flag_values, full=wanted == "full"))
        sys.stdout.flush()
        sys.exit(0)

    _drop_closed_loop_noise()
    from sandmle import config_lib
    config_lib.quiet_library_logs()  # before parsing: config files import jax / orbax

    def parse(args: list[str]) -> Any:
        try:
            return flags_parser(args) if flags_parser else flag_values(args)
        except (UserError, app.UsageError) as e:
            fail(prog, e)
        except flags.Error as e:
            fail(prog, f"{one_line(e)} (see {prog} --help)")
        except KeyboardInterrupt:
            fail(prog, "interrupted", 130)

    def guarded(args: list[str]) -> Any:
        try:
            return main(args)
        except (UserError, app.UsageError) as e:
            fail(prog, e)
        except KeyboardInterrupt:
            fail(prog, "interrupted", 130)

    app.run(guarded, argv=argv, flags_parser=parse)
