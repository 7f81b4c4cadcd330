"""Fuzzed command line: random `--set` values and random TOML/JSON config files.

`scadles config` runs in-process. Allowed outcomes: exit 0 with a TOML config on stdout that
reads back to the same config, or exit 2 with exactly one line on stderr and nothing on stdout.
Any exception escaping `main` (a traceback, exit 1) fails the property.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import currently_in_test_context, event, given
from hypothesis import strategies as st

from scadles.cli.main import main
from scadles.config.checks import string
from scadles.config.load import SCHEMA, load_config

pytestmark = pytest.mark.fuzz

DEMO = resources.files("scadles").joinpath("configs/demo.toml").read_text("utf-8")
KEYS = sorted(f"{s}.{k}" for s, (_, checks) in SCHEMA.items() for k in checks)
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _cli(argv: list[str]) -> tuple[int, str, str]:
    """Run `scadles ARGV` in-process; return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _check_config(argv: list[str]) -> None:
    """Assert `scadles config ARGV` printed a config that reads back, or one error line."""
    code, out, err = _cli(["config", *argv])
    assert code in (0, 2), (code, err)
    if code == 2:
        assert out == ""
        assert err.startswith("scadles: error: ") and err.endswith("\n"), err
        assert err.count("\n") == 1 and "\r" not in err, err
        _event("exit 2: " + err[16:].split(":")[0][:30])
        return
    assert err == ""
    with tempfile.TemporaryDirectory() as d:
        printed = Path(d) / "printed.toml"
        printed.write_text(out, encoding="utf-8")
        again = _cli(["config", str(printed)])
    assert again == (0, out, "")
    _event("exit 0")


def _event(what: str) -> None:
    """Count an outcome for --hypothesis-show-statistics (inside a property only)."""
    if currently_in_test_context():
        event(what)


# --- TOML text of random structure -------------------------------------------------------------


def _key(k: str) -> str:
    return k if _BARE.fullmatch(k) else json.dumps(k)


def _toml(v: Any) -> str:
    """Render a value as TOML (strings as JSON strings, which TOML reads as basic strings)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return "{ " + ", ".join(f"{_key(k)} = {_toml(x)}" for k, x in v.items()) + " }"


_leaf = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from(["normal-S1", "uniform-S2", "npz", "ddl", "mlp", "synthetic", "top1", "iid"]),
    st.sampled_from([0, 1, -1, 0.5, 1e-4, 16, 2**31]),
)
_value = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_section = st.sampled_from([*SCHEMA, "bogus", ""])
_field = st.sampled_from(sorted({k for _, (_, c) in SCHEMA.items() for k in c} | {"x", "count"}))


@st.composite
def _document(draw: st.DrawFn) -> str:
    """Draw a TOML document: tables of (mostly schema) keys with random values."""
    lines = []
    for section in draw(st.lists(_section, max_size=4, unique=True)):
        lines.append(f"[{_key(section)}]")
        for k in draw(st.lists(_field, max_size=4, unique=True)):
            lines.append(f"{_key(k)} = {_toml(draw(_value))}")
    return "\n".join(lines) + "\n"


def _splice(data: st.DataObject, text: str) -> str:
    """Return text with a random span replaced by random text."""
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, min(i + 40, len(text))))
    return text[:i] + data.draw(st.text(max_size=20)) + text[j:]


@given(st.data())
def test_fuzzed_config_file_gives_a_config_or_one_error_line(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["document", "demo-spliced", "text", "bytes", "json"]))
    suffix = ".json" if kind == "json" else ".toml"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"cfg{suffix}"
        if kind == "document":
            path.write_text(data.draw(_document()), encoding="utf-8")
        elif kind == "demo-spliced":
            path.write_text(_splice(data, DEMO), encoding="utf-8")
        elif kind == "text":
            path.write_text(data.draw(st.text(max_size=200)), encoding="utf-8")
        elif kind == "bytes":  # also invalid UTF-8
            path.write_bytes(data.draw(st.binary(max_size=200)))
        else:
            raw = data.draw(st.dictionaries(_section, st.dictionaries(_field, _value, max_size=3)))
            text = json.dumps(raw)
            path.write_text(_splice(data, text) if data.draw(st.booleans()) else text)
        overrides = [f"--set={s}" for s in data.draw(st.lists(st.sampled_from(
            ["data.name=synthetic", "devices.count=4", "train.steps=3"]), max_size=2))]  # fmt: skip
        _check_config([str(path), *overrides])


# --- --set values ------------------------------------------------------------------------------


_PLAUSIBLE = ["0", "1", "2", "4", "8", "64", "0.5", "0.01", "1e-4", "true", "false", "iid",
              "dirichlet", "persistence", "truncation", "topk", "powersgd", "poisson", "top5",
              "[]", "[1, 2, 3, 4]", '{dist = "normal", mean = 4, std = 1}',
              "[{at_s = 1.0, scale = 2.0}]", "[10, 20]", "normal-S1", "ddl", "mlp"]  # fmt: skip
_set_value = st.one_of(
    st.sampled_from(_PLAUSIBLE),  # values that some keys accept
    st.text(max_size=30),  # anything a shell can pass
    _value.map(_toml),  # well-formed TOML values of every type
    st.from_regex(r"[\[\]{}=,\"'0-9a-z.+\-_ ]{0,30}", fullmatch=True),  # TOML-ish punctuation
)
_dotted = st.one_of(
    st.sampled_from(KEYS),
    st.text(max_size=20),
    st.builds(".".join, st.lists(st.sampled_from([*SCHEMA, "x", "", " ", "count"]), max_size=4)),
)


@given(st.lists(st.tuples(_dotted, _set_value), min_size=1, max_size=3))
def test_fuzzed_set_gives_a_config_or_one_error_line(sets: list[tuple[str, str]]) -> None:
    _check_config([f"--set={k}={v}" for k, v in sets])


@given(st.sampled_from(KEYS), _set_value)
def test_fuzzed_set_on_one_known_key_gives_a_config_or_one_error_line(key: str, v: str) -> None:
    _check_config([f"--set={key}={v}"])


# --- inputs the parsers give up on with other exceptions (found by these properties) -----------


@pytest.mark.parametrize("depth", [50, 400, 3000])
@pytest.mark.parametrize("opener", ["[", "{a="])
def test_deeply_nested_set_value_is_one_error_line(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    for key in ("data.name", "streams.rates", "bogus.x"):  # tomllib recursion: RecursionError
        _check_config([f"--set={key}={opener * depth}1{closer * depth}"])


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_deeply_nested_or_overlong_config_file_is_one_error_line(suffix: str) -> None:
    deep_toml, deep_json = "a = " + "[" * 5000 + "]" * 5000, "[" * 100_000 + "]" * 100_000
    long_int_toml, long_int_json = (
        "[data]\nn_train = " + "9" * 5000,
        '{"data": 1' + "0" * 5000 + "}",
    )
    texts = [deep_toml, long_int_toml] if suffix == ".toml" else [deep_json, long_int_json]
    with tempfile.TemporaryDirectory() as d:
        for i, text in enumerate(texts):
            path = Path(d) / f"c{i}{suffix}"
            path.write_text(text)
            code, out, err = _cli(["config", str(path)])
            assert (code, out, err.count("\n")) == (2, "", 1), err
            assert str(path) in err


def test_overlong_integer_in_set_is_one_error_line() -> None:
    _check_config([f"--set=data.n_train={'9' * 5000}"])  # ValueError from int(): > 4300 digits


FREE_TEXT = [
    f"{s}.{k}" for s, (_, checks) in SCHEMA.items() for k, c in checks.items() if c is string
]


def test_astral_character_round_trips_and_lone_surrogate_is_one_error_line() -> None:
    assert FREE_TEXT, "no free-text config key left to test"
    key = FREE_TEXT[0]
    _check_config([f"--set={key}=a\U00010000b"])  # was printed as "\ud800\udc00": not TOML
    code, _, err = _cli(["config", f"--set={key}=\udcff"])  # argv byte 0xff, surrogateescaped
    assert code == 2 and "valid Unicode" in err
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.json"
        section, field = key.split(".")
        path.write_text(json.dumps({"train": {"steps": 3}, section: {field: "\ud800"}}))
        code, _, err = _cli(["config", str(path)])
        assert code == 2 and "valid Unicode" in err


def test_the_properties_reach_valid_configs() -> None:
    assert load_config(None, ["data.name=synthetic", "devices.count=4"]).devices.count == 4
    code, out, _ = _cli(["config", "--set=devices.count=4"])
    assert code == 0 and "count = 4" in out
