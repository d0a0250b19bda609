"""The base of every error dmgd reports to a user as a message rather than a traceback, and
how a message names an option: as the command line spells it, or as the Python API does."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator


class DmgdError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


# How each option is spelled where the user wrote it. `dmgd.run(...)` callers get the
# Python spelling; the CLI switches to its own while a command runs (`cli_spelling`).
_SPELLINGS = {
    "python": {"resume": "resume=True", "overwrite": "overwrite=True", "out": "`out`",
               "batch": "batch_size", "device": "device", "data": 'data="DIR"', "model": 'model="DIR"',
               "no_lock": "lock=False"},
    "cli": {"resume": "--resume", "overwrite": "--overwrite", "out": "--out", "batch": "--batch",
            "device": "--device", "data": "--set data=DIR", "model": "--set model=DIR",
            "no_lock": "--no-lock"},
}
_spelling: contextvars.ContextVar[str] = contextvars.ContextVar("dmgd_option_spelling", default="python")


def option(name: str) -> str:
    """Option `name` (resume, overwrite, out, batch, device, data, model, no_lock) as the user passes it."""
    return _SPELLINGS[_spelling.get()][name]


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Inside: messages name options as the `dmgd` command line spells them."""
    token = _spelling.set("cli")
    try:
        yield
    finally:
        _spelling.reset(token)
