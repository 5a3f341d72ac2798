import pytest
from helpers import make_notebook

from nbsweep.errors import NotebookError
from nbsweep.notebook.parameters import (
    OPAQUE,
    Leaf,
    find_parameters,
    is_parameter_name,
    parse_leniently,
)


def params(found):
    return {p.name: (p.default, p.type_name) for p in found.parameters}


def test_tagged_cell_with_annotations():
    nb = make_notebook(
        [
            "import os",
            (
                "lr: float = 1e-3\nlayers: list[int] = [64]\nname: str | None = None\nepochs = 3\n"
                "x, y = 1, 2\nself_ref = lr * 2\n",
                ["parameters"],
            ),
        ]
    )
    found = find_parameters(nb)
    assert found.style == "parameters-cell"
    assert found.cell_index == 1
    assert params(found) == {
        "lr": (1e-3, "float"),
        "layers": ([64], "list[int]"),
        "name": (None, "str | None"),
        "epochs": (3, "int"),
        "self_ref": (None, ""),
    }
    by_name = {parameter.name: parameter for parameter in found.parameters}
    assert by_name["self_ref"].default_source == "lr * 2"
    assert not by_name["self_ref"].is_literal
    assert by_name["epochs"].line == 4
    assert found.tree["self_ref"] is OPAQUE
    assert found.tree["lr"] == Leaf(1e-3)


def test_tagged_cell_wins_over_config_dict_and_only_first_tag_counts():
    nb = make_notebook(
        [
            "config = {'lr': 1}",
            ("a = 1", ["parameters"]),
            ("b = 2", ["parameters"]),
        ]
    )
    assert list(params(find_parameters(nb))) == ["a"]


def test_nested_dict_defaults_give_dotted_names():
    nb = make_notebook(
        [("opt = {'name': 'adam', 'beta1': 0.9, 'sched': {'gamma': 0.5}}", ["parameters"])]
    )
    assert params(find_parameters(nb)) == {
        "opt.name": ("adam", "str"),
        "opt.beta1": (0.9, "float"),
        "opt.sched.gamma": (0.5, "float"),
    }


@pytest.mark.parametrize(
    "source",
    [
        "config = {'lr': 0.1, 'opt': {'beta1': 0.9}, 'epochs': 2}\nprint(config)",
        "config = dict(lr=0.1, opt=dict(beta1=0.9), epochs=2)",
        "config: dict = {'lr': 0.1, 'opt': dict(beta1=0.9), 'epochs': 2}",
    ],
    ids=["dict-literal", "dict-call", "annotated"],
)
def test_config_dict_forms(source):
    nb = make_notebook(["import math", source])
    found = find_parameters(nb)
    assert found.style == "config-dict"
    assert found.cell_index == 1
    assert found.config_var == "config"
    assert params(found) == {
        "lr": (0.1, "float"),
        "opt.beta1": (0.9, "float"),
        "epochs": (2, "int"),
    }


def test_config_var_option_and_statement_position():
    nb = make_notebook(["hp = dict(\n    lr=0.1,\n)\nrun = start(hp)\n"])
    found = find_parameters(nb, config_var="hp")
    assert found.statement_end_line == 3
    assert not found.statement_is_last
    with pytest.raises(NotebookError, match="tag the cell"):
        find_parameters(nb)


def test_config_inside_a_function_is_not_top_level():
    nb = make_notebook(["def f():\n    config = {'lr': 1}\n    return config"])
    with pytest.raises(NotebookError, match="no parameters found"):
        find_parameters(nb)


def test_config_followed_on_the_same_line_is_refused():
    nb = make_notebook(["config = {'lr': 1}; run(config)"])
    with pytest.raises(NotebookError, match="lines of its own"):
        find_parameters(nb)


def test_non_identifier_keys_are_known_but_not_listed():
    nb = make_notebook(["config = {'l1-weight': 1.0, 3: 'x', 'ok': 1}"])
    found = find_parameters(nb)
    assert list(params(found)) == ["ok"]
    assert "l1-weight" in found.tree and 3 in found.tree


def test_magics_and_broken_lines_are_skipped_not_fatal():
    source = "%matplotlib inline\n!pip list\nlr = 0.1\n= 2\nepochs = 3 # type: int\n"
    nb = make_notebook([(source, ["parameters"])])
    assert params(find_parameters(nb)) == {"lr": (0.1, "float"), "epochs": (3, "int")}


def test_parse_leniently_keeps_line_numbers():
    module, text = parse_leniently("%time\nx = 1\n%%bash\ny = 2")
    assert [statement.lineno for statement in module.body] == [2, 4]
    assert text.split("\n")[0] == ""


@pytest.mark.parametrize(
    "name,ok",
    [
        ("lr", True),
        ("opt.beta1", True),
        ("model.opt.lr", True),
        ("_x", True),
        ("l1-weight", False),
        ("1x", False),
        ("class", False),
        ("a..b", False),
        ("", False),
        ("a.", False),
        ("x; import os", False),
        ("é", True),
    ],
)
def test_parameter_names(name, ok):
    assert is_parameter_name(name) is ok
