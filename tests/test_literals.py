import ast
import math

import pytest

from nbsweep.errors import ParameterError
from nbsweep.notebook.literals import parse_literal, same_value, to_literal

TRICKY = [
    0,
    -7,
    10**40,
    0.1,
    1e-05,
    -2.5e-300,
    5e-324,
    1.7976931348623157e308,
    math.inf,
    -math.inf,
    True,
    False,
    None,
    "",
    "plain",
    'it\'s "quoted"',
    "line\nbreak\ttab\\backslash",
    "__import__('os').system('echo pwned')",
    "'; import os; os.system('x'); '",
    '"""triple"""',
    "unicode é ✓ \U0001f600",
    "\ud800 lone surrogate",
    b"bytes\x00\xff",
    [1, 2.0, "3", None],
    (),
    (1,),
    (1, "a", (2, 3)),
    {"a": {"b": {"c": [1, {"d": None}]}}},
    {1: "int key", (1, 2): "tuple key", None: "none key", False: "bool key"},
    set(),
    {1, 2, 3},
]


@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_round_trip_is_exact(value):
    source = to_literal(value)
    assert same_value(parse_literal(source), value)


@pytest.mark.parametrize(
    "value", [v for v in TRICKY if v == v and v not in (math.inf, -math.inf)], ids=repr
)
def test_plain_literal_eval_reads_it_back(value):
    # Everything except inf/nan needs nothing beyond ast.literal_eval.
    assert same_value(ast.literal_eval(to_literal(value)), value)


def test_nan_round_trips_and_is_the_only_call_written():
    assert to_literal(math.nan) == "float('nan')"
    assert math.isnan(parse_literal(to_literal(math.nan)))
    assert to_literal([math.inf, -math.inf]) == "[float('inf'), float('-inf')]"


def test_code_like_strings_stay_strings():
    value = "__import__('os').system('x')"
    assert parse_literal(to_literal(value)) == value
    assert isinstance(ast.parse(to_literal(value), mode="eval").body, ast.Constant)


def test_floats_keep_their_type_and_digits():
    assert to_literal(1.0) == "1.0"
    assert to_literal(1e-05) == "1e-05"
    assert to_literal(0.30000000000000004) == "0.30000000000000004"


@pytest.mark.parametrize(
    "value",
    [object(), lambda: 1, frozenset({1}), [1, object()]],
    ids=["object", "lambda", "frozenset", "nested-object"],
)
def test_other_types_are_refused(value):
    with pytest.raises(ParameterError, match="cannot be injected"):
        to_literal(value)


def test_subclasses_are_refused_not_repr_pasted():
    import enum

    class Colour(enum.IntEnum):
        RED = 1

    class Sneaky(str):
        def __repr__(self):
            return "__import__('os').getcwd()"

    with pytest.raises(ParameterError):
        to_literal(Colour.RED)
    with pytest.raises(ParameterError):
        to_literal(Sneaky("x"))


@pytest.mark.parametrize("source", ["float('nan') + 1", "float(x)", "print(1)", "__import__('os')"])
def test_parse_literal_refuses_code(source):
    with pytest.raises((ValueError, SyntaxError)):
        parse_literal(source)


def test_same_value_distinguishes_types():
    assert not same_value(1, 1.0)
    assert not same_value(1, True)
    assert not same_value([1], (1,))
    assert same_value([math.nan], [math.nan])
