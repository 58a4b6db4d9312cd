"""The user-error type every sandmle command turns into one line and exit code 2.

Raise `UserError` (or a subclass) for input a user can fix: a broken config, a bad
flag value, a workdir that cannot be written, a resume that would mix two runs. The
console scripts (`sandmle.cli.run_app`) print `<tool>: <message>` on one stderr line
and exit 2, with no traceback. Anything else that escapes is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: one clear line on stderr, exit code 2.

    The message should say what was wrong and what to do about it.
    """


def one_line(message: object) -> str:
    """`message` as a single line (newlines folded into "; ")."""
    parts = [p.strip() for p in str(message).splitlines() if p.strip()]
    return "; ".join(parts) if parts else type(message).__name__
