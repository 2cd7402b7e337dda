"""Whole numbers typed on the command line: ASCII digits only.

``int()`` (argparse's ``type=int``) also takes other scripts' digits (``٨٠٨٠``) and surrounding
whitespace; a port, a worker count or any other number a user types goes through ``ascii_int``."""

from __future__ import annotations

import argparse
import re
from typing import Final

_INTEGER: Final = re.compile(r"-?[0-9]+")


def ascii_int(text: str) -> int:
    """``"8080"`` → 8080; anything but an optional ``-`` and ASCII digits is refused (argparse reports it)."""
    if not _INTEGER.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number in ASCII digits (0-9)")
    return int(text)
