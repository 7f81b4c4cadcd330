"""Read a text file the user named (a config, a rate trace, a profile CSV, a report's JSON).

[ours] Every user-given text file is read through `read_text`, so a missing, unreadable or binary
file stops the run with one line naming the config key (or argument) and the path, never with a
UnicodeDecodeError traceback from deep inside a parser. Text is UTF-8; a leading byte-order mark
(what spreadsheet programs write before a CSV) is dropped; a NUL byte marks a binary file even
where its bytes happen to decode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scadles.errors import UserError


def show(path: str | Path) -> str:
    """Return path as one printable line (a newline in a name is shown escaped)."""
    return repr(str(path))[1:-1]


def where_undecodable(err: UnicodeDecodeError) -> str:
    """Say where a decode failed: 'byte 0xff at offset 12'."""
    return f"byte 0x{err.object[err.start]:02x} at offset {err.start}"


def decode(data: bytes, name: str) -> str:
    """Return data as UTF-8 text (a leading byte-order mark dropped); for undecodable bytes or
    a NUL byte (a binary file) UserError "<name> is not UTF-8 text (where)", name being what
    the bytes are ('streams.trace: /tmp/x.csv', 'evals.jsonl line 3')."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{name} is not UTF-8 text ({where_undecodable(err)})") from None
    if "\0" in text:
        nul = data.index(b"\0")
        raise UserError(f"{name} is not UTF-8 text (a NUL byte at offset {nul}: binary?)")
    return text


def read_text(path: str | Path, key: str) -> str:
    """Return the UTF-8 text of the file `key` names (~ expanded); UserError with one line
    naming key and path when it is missing, a directory, unreadable or not UTF-8 text."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except (FileNotFoundError, ValueError):  # ValueError: a NUL in the name
        raise UserError(f"{key}: file not found: {show(path)}") from None
    except IsADirectoryError:
        raise UserError(f"{key}: {show(path)} is a directory, not a file") from None
    except OSError as err:
        raise UserError(f"{key}: cannot read {show(path)}: {err.strerror or err}") from None
    return decode(data, f"{key}: {show(path)}")


def read_json(path: str | Path, key: str) -> Any:
    """Return the JSON value in the file `key` names; UserError with one line when the file is
    missing, unreadable, not UTF-8 text or not JSON."""
    text = read_text(path, key)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, an over-long integer
        raise UserError(f"{key}: {show(path)}: cannot read JSON ({e})") from None
