"""Dataclass fields as CLI flags: list values with backslash escapes."""

from __future__ import annotations

import pytest

import app.cli
from app.cli_common import _parse_list


@pytest.mark.parametrize("text, expected", [
    ("q_proj,v_proj", ["q_proj", "v_proj"]),
    ('\\n,:,",*', ["\n", ":", '"', "*"]),          # llama.cpp's default breakers
    (r'\"', ['\\"']),                                  # unknown escapes stay as typed
    (r"a\,b,c", ["a,b", "c"]),
    (r"x\\y", ["x\\y"]),
    (r"tab\there", ["tab\there"]),
    ("a,,b,", ["a", "b"]),
])
def test_parse_list_escapes(text, expected):
    assert _parse_list(text) == expected


def test_dry_sequence_breakers_take_a_newline(capsys):
    """``--dry-sequence-breakers '\\n,:'`` reaches DecodingConfig as a newline and a colon (the
    bad value below makes generate stop at validation, before any model is loaded)."""
    code = app.cli.main(["generate", "--dry-sequence-breakers", r"\n,:", "--dry-base", "0.5", "hi"])
    assert code == 2
    assert "dry_base=0.5" in capsys.readouterr().err
