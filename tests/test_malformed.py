"""Every config field and every numeric command-line flag, fed malformed values (wrong
type, negative, zero, NaN, inf, huge, empty): exit status 2, one line naming the field or
flag, no traceback, nothing written.

Both lists are read from the code (the config dataclasses, the CLI's parser), so a field
or flag added later is covered without touching this file.
"""

import argparse
import dataclasses
import typing

import pytest
import yaml

from tinylm.cli import build_parser, main
from tinylm.config import DEFAULT_LIMIT, LIMITS, SECTIONS, range_problem

NUMBERS = ["abc", "-1", "nan", "inf", "-inf", "1e300", str(10**30), "", "0"]
BOOLS = ["abc", "2", "-1", "nan", ""]


def config_fields():
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield f"{section}.{f.name}", hints[f.name], LIMITS.get(f"{section}.{f.name}")


def bad_values(kind, limit):
    """The malformed values of a field of this type and limit (0 only where refused)."""
    limit = limit or DEFAULT_LIMIT
    if kind in (int, float):
        values = [v for v in NUMBERS if v != "0" or range_problem(kind(0), limit)]
        return values + (["1.5"] if kind is int else [])
    if kind is bool:
        return BOOLS
    values = []
    if limit.choices or limit.pattern:
        values += ["abc", "-1", "nan", ""]
    elif limit.nonempty:
        values += [""]
    return values


CASES = [(key, value) for key, kind, limit in config_fields() for value in bad_values(kind, limit)]


def one_line(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], (argv, err)
    return lines[0]


@pytest.mark.parametrize(("key", "value"), CASES)
def test_a_malformed_config_value_is_one_line(tmp_path, capsys, key, value):
    out = tmp_path / "run"
    line = one_line(capsys, ["train", f"{key}={value}", "--out", str(out)])
    assert key in line, line
    assert not out.exists()


@pytest.mark.parametrize(("key", "kind", "limit"), list(config_fields()))
def test_a_config_value_of_the_wrong_type_in_yaml_is_one_line(tmp_path, capsys, key, kind, limit):
    section, name = key.split(".")
    for value in ([1, 2], {"a": 1}):
        file = tmp_path / "bad.yaml"
        file.write_text(yaml.safe_dump({section: {name: value}}))
        line = one_line(capsys, ["train", str(file), "--out", str(tmp_path / "run")])
        assert key in line, line


def numeric_flags(parser, path=()):
    """(command words, flag, kind, limit) of every numeric option of every command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from numeric_flags(sub, (*path, name))
        elif hasattr(action.type, "kind"):
            yield path, action.option_strings[-1], action.type.kind, action.type.limit


FLAGS = list(numeric_flags(build_parser()))


def test_every_numeric_flag_is_checked():
    def plain(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from plain(sub)
            elif action.type in (int, float):
                yield action.option_strings

    assert list(plain(build_parser())) == []
    flags = {(" ".join(path), flag) for path, flag, _, _ in FLAGS}
    assert {("generate", "--top-k"), ("prepare", "--seed"), ("eval", "--batch-size")} <= flags


@pytest.mark.parametrize(
    ("path", "flag", "value"),
    [(path, flag, value) for path, flag, kind, limit in FLAGS for value in bad_values(kind, limit)],
)
def test_a_malformed_numeric_flag_is_one_line(capsys, path, flag, value):
    line = one_line(capsys, [*path, f"{flag}={value}"])
    assert flag in line, line
