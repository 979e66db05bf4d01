"""`bayespeft config` names each key's type so that a user can write a valid value."""

from __future__ import annotations

from typing import Literal, Optional

import pytest

from bayespeft.cli import main
from bayespeft.config.describe import type_name


@pytest.mark.parametrize(
    "ann,shown",
    [
        (Literal["none", "rotate", "noise"], "'none' | 'rotate' | 'noise'"),
        (bool | Literal["auto"], "bool | 'auto'"),
        (Optional[Literal["a"]], "'a' | None"),
        (Literal[1, 2], "1 | 2"),
        (int, "int"),
        (int | None, "int | None"),
        (list[str] | None, "list[str] | None"),
    ],
)
def test_type_names(ann, shown):
    assert type_name(ann) == shown


def test_config_lists_the_allowed_values_of_a_choice(capsys):
    assert main(["config", "data"]) == 0
    out = capsys.readouterr().out
    assert "data.shift ('none' | 'rotate' | 'noise', default 'none'):" in out
    assert "(Literal" not in out
