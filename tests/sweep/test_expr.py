"""The case-value expression language: results against Python's own arithmetic, and its error messages."""

import pytest

from bayespeft.experiments.sweep.expr import ExpressionError, is_expression, parse

CFG = {"adapter.r": 4, "train.lr": 0.001, "data.batch_size": 32, "train.deterministic": True, "model.name": "vit"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2 * adapter.r", 2 * 4),
        ("adapter.r + 2 * 3", 4 + 2 * 3),
        ("(adapter.r + 2) * 3", (4 + 2) * 3),
        ("-adapter.r ** 2", -(4**2)),
        ("2 ** -1", 2**-1),
        ("2 ** 3 ** 2", 2 ** 3**2),
        ("data.batch_size // 3 % 4", 32 // 3 % 4),
        ("data.batch_size / 3", 32 / 3),
        ("train.lr * 1e3", 0.001 * 1e3),
        ("min(adapter.r, 3) + max(1, 2, 0.5)", min(4, 3) + max(1, 2, 0.5)),
        ("int(data.batch_size / 5) + round(2.6) + abs(-1.5)", int(32 / 5) + round(2.6) + abs(-1.5)),
        ("10 - 4 - 3", 10 - 4 - 3),
        (".5 * 4", 0.5 * 4),
        ("2 ** 1024", 2**1024),  # the largest integer power allowed (the float range)
        ("(0 - 2) ** 1023", (-2) ** 1023),
        ("1 ** 100000000", 1),
        ("2 ** -100000000", 2.0**-100000000),
    ],
)
def test_matches_python_arithmetic(text, expected):
    value = parse("${" + text + "}").evaluate(CFG.__getitem__)
    assert value == expected and type(value) is type(expected)


def test_keys_are_collected():
    assert parse("${min(adapter.r, data.batch_size) * adapter.r}").keys == ("adapter.r", "data.batch_size")


def test_marker():
    assert is_expression("${2 * adapter.r}") and is_expression(" ${1} ")
    assert not is_expression("2 * adapter.r") and not is_expression("deit_tiny") and not is_expression(16)


@pytest.mark.parametrize(
    "text, message",
    [
        ("${2 *}", "ends too early"),
        ("${2 3}", "unexpected '3' at position 2"),
        ("${(2 + 3}", "ends too early"),
        ("${exec(1)}", "unknown function 'exec'"),
        ("${__import__('os')}", "unexpected character"),
        ("${__import__(1)}", "unknown function '__import__'"),
        ("${adapter.r; 1}", "unexpected character ';'"),
        ("${}", "empty expression"),
    ],
)
def test_syntax_errors(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("${adapter.rank * 2}", "no value for 'adapter.rank'"),
        ("${model.name * 2}", "model.name is 'vit', not a number"),
        ("${train.deterministic + 1}", "train.deterministic is True, not a number"),
        ("${adapter.r / (adapter.r - 4)}", "division by zero"),
        ("${(0 - 1) ** 0.5}", "not a finite real number"),
        ("${9 ** 9 ** 9 ** 9}", "overflows"),  # exact integers: refused before computing (was a hang)
        ("${2 ** 1025}", "overflows"),
        ("${(0 - 3) ** 700}", "overflows"),
    ],
)
def test_evaluation_errors(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse(text).evaluate(CFG.__getitem__)
