"""Golden tests of injection: the exact cell written, and what the notebook's code sees."""

import math

import nbformat
import pytest
from helpers import make_notebook

from nbsweep.errors import NotebookError, ParameterError
from nbsweep.notebook.injection import clean, nest, parameterize
from nbsweep.notebook.parameters import CONTINUED_TAG, INJECTED_TAG


def run_cells(nb, upto=None):
    """Execute code cells' sources in one namespace (plain Python: these cells need nothing)."""
    namespace: dict = {}
    for cell in nb.cells[:upto]:
        if cell.cell_type == "code":
            exec(cell.source, namespace)
    return namespace


def injected_cells(nb):
    return [c for c in nb.cells if INJECTED_TAG in c.metadata.get("tags", [])]


TAGGED = make_notebook(
    [
        "# md: title",
        (
            "lr = 0.001\nepochs = 3\nname = 'base'\nopt = {'name': 'adam', 'beta1': 0.9}\n",
            ["parameters"],
        ),
        "result = (lr, epochs, name, opt)",
    ]
)


def test_tagged_cell_golden():
    injection = parameterize(TAGGED, {"lr": 0.1, "name": "it's"})
    assert injection.injected_cell_index == 2
    assert injection.notebook.cells[2].source == (
        '# Parameters injected by nbsweep\nlr = 0.1\nname = "it\'s"\n'
    )
    assert injection.notebook.cells[2].metadata.tags == [INJECTED_TAG]
    assert run_cells(injection.notebook)["result"] == (
        0.1,
        3,
        "it's",
        {"name": "adam", "beta1": 0.9},
    )
    assert injection.origins == (0, 1, None, 2)


def test_nested_values_deep_merge_in_tagged_cell():
    for values in ({"opt.beta1": 0.5}, {"opt": {"beta1": 0.5}}):
        nb = parameterize(TAGGED, values).notebook
        assert run_cells(nb)["result"][3] == {"name": "adam", "beta1": 0.5}
        assert "_nbsweep_merge" not in run_cells(nb)


def test_reinjection_replaces_the_cell_and_is_idempotent():
    once = parameterize(TAGGED, {"lr": 0.2}).notebook
    twice = parameterize(once, {"epochs": 9}).notebook
    assert len(injected_cells(twice)) == 1
    assert run_cells(twice)["result"][:2] == (0.001, 9)
    again = parameterize(twice, {"epochs": 9}).notebook
    assert [c.source for c in again.cells] == [c.source for c in twice.cells]


def test_no_values_means_no_injected_cell_and_clean_outputs():
    nb = parameterize(TAGGED, {"lr": 1.0}).notebook
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", text="stale")]
    nb.cells[3].execution_count = 7
    nb.cells[3].metadata["nbsweep"] = {"setup": {"ran_once": True, "template_pid": 1}}
    nb.metadata["papermill"] = {"parameters": {"lr": 1}}
    cleaned = parameterize(nb, {}).notebook
    assert not injected_cells(cleaned)
    assert cleaned.cells[2].outputs == [] and cleaned.cells[2].execution_count is None
    assert "papermill" not in cleaned.metadata
    assert "nbsweep" not in cleaned.cells[2].metadata, "a saved trial's setup mark is stale"


CONFIG_LAST = make_notebook(
    [
        "import math",
        "config = dict(\n    lr=0.001,\n    opt=dict(name='adam', beta1=0.9),\n    epochs=3,\n)",
        "seen = dict(config)",
    ]
)

CONFIG_SPLIT = make_notebook(
    [
        "config = {'lr': 0.001, 'opt': {'name': 'adam', 'beta1': 0.9}, 'epochs': 3}\n"
        "seen = {**config, 'opt': dict(config['opt'])}\nbeta = config['opt']['beta1']",
    ]
)


def test_config_dict_golden():
    injection = parameterize(CONFIG_LAST, {"opt.beta1": 0.5, "epochs": 4})
    nb = injection.notebook
    assert injection.injected_cell_index == 2
    source = nb.cells[2].source
    assert source.startswith("# Parameters injected by nbsweep\ndef _nbsweep_merge(base, updates):")
    assert source.endswith(
        "_nbsweep_merge(config, {'opt': {'beta1': 0.5}, 'epochs': 4})\ndel _nbsweep_merge\n"
    )
    assert run_cells(nb)["seen"] == {
        "lr": 0.001,
        "opt": {"name": "adam", "beta1": 0.5},
        "epochs": 4,
    }


def test_config_dict_split_when_the_cell_goes_on():
    injection = parameterize(CONFIG_SPLIT, {"opt.beta1": 0.25, "lr": 1})
    nb = injection.notebook
    assert [c.metadata.get("tags", []) for c in nb.cells] == [[], [INJECTED_TAG], [CONTINUED_TAG]]
    assert nb.cells[0].source.startswith("config = {") and "seen" not in nb.cells[0].source
    namespace = run_cells(nb)
    assert namespace["beta"] == 0.25
    assert namespace["seen"] == {"lr": 1.0, "opt": {"name": "adam", "beta1": 0.25}, "epochs": 3}
    assert injection.origins == (0, None, 0)
    # Re-injecting puts the cell back together first: still one injection, one split.
    again = parameterize(nb, {"lr": 2.0}).notebook
    assert len(again.cells) == 3 and len(injected_cells(again)) == 1
    assert clean(nb)[0].cells[0].source == CONFIG_SPLIT.cells[0].source


def test_unknown_names_list_known_ones_with_a_suggestion():
    with pytest.raises(ParameterError) as error:
        parameterize(TAGGED, {"lrr": 1, "opt.beta2": 0.1})
    message = str(error.value)
    assert "'lrr' (did you mean 'lr'?)" in message
    assert "'opt.beta2' (did you mean 'opt.beta1'?)" in message
    assert "lr, epochs, name, opt.name, opt.beta1" in message
    assert "--allow-unknown" in message


def test_allow_unknown_injects_anyway():
    nb = parameterize(TAGGED, {"extra": [1, 2], "opt.new": True}, allow_unknown=True).notebook
    namespace = run_cells(nb)
    assert namespace["extra"] == [1, 2]
    assert namespace["opt"] == {"name": "adam", "beta1": 0.9, "new": True}


@pytest.mark.parametrize("name", ["l1-weight", "x; import os", "class", "a..b", "1abc"])
def test_bad_names_are_rejected(name):
    with pytest.raises(ParameterError, match="not a parameter name"):
        parameterize(TAGGED, {name: 1}, allow_unknown=True)


def test_type_sanity():
    injection = parameterize(TAGGED, {"lr": 1, "epochs": "1e1", "name": 5})
    namespace = run_cells(injection.notebook)
    assert namespace["result"][:3] == (1.0, 10, 5)
    assert type(namespace["lr"]) is float and type(namespace["epochs"]) is int
    assert len(injection.warnings) == 1 and "epochs" in injection.warnings[0]
    lr = parameterize(TAGGED, {"lr": "1e-5"})
    assert run_cells(lr.notebook)["lr"] == 1e-5 and "1e-5" in lr.warnings[0]
    not_a_number = parameterize(TAGGED, {"lr": "fast"})
    assert run_cells(not_a_number.notebook)["lr"] == "fast"
    assert parameterize(TAGGED, {"epochs": True}).values == {"epochs": True}
    whole = parameterize(TAGGED, {"epochs": 48.0})
    assert whole.values == {"epochs": 48} and "q_uniform" in whole.warnings[0]
    assert parameterize(TAGGED, {"epochs": 4.5}).values == {"epochs": 4.5}


def test_tricky_values_arrive_intact():
    values = {
        "name": "__import__('os').system('echo pwned')\n'''\"\"\"",
        "lr": math.inf,
        "epochs": None,
        "opt": {"name": ("a", 1), "beta1": {1: [2.5, None]}},
    }
    namespace = run_cells(parameterize(TAGGED, values).notebook)
    assert namespace["name"] == values["name"]
    assert namespace["lr"] == math.inf and namespace["epochs"] is None
    assert namespace["opt"] == {"name": ("a", 1), "beta1": {1: [2.5, None]}}


def test_no_parameters_is_a_clear_error_only_when_values_are_given():
    nb = make_notebook(["x = 1"])
    assert parameterize(nb, {}).notebook.cells[0].source == "x = 1"
    with pytest.raises(NotebookError, match="tag the cell that sets the defaults"):
        parameterize(nb, {"x": 2})


def test_non_python_notebooks_are_refused():
    nb = make_notebook([("x <- 1", ["parameters"])])
    nb.metadata["kernelspec"] = {"name": "ir", "language": "R", "display_name": "R"}
    with pytest.raises(NotebookError, match="language is 'r'"):
        parameterize(nb, {"x": 2})


def test_cell_ids_follow_the_notebook_version():
    old = make_notebook([("a = 1", ["parameters"])], minor=4)
    nb = parameterize(old, {"a": 2}).notebook
    assert "id" not in nb.cells[1]
    nbformat.validate(nb)
    new = parameterize(make_notebook([("a = 1", ["parameters"])]), {"a": 2}).notebook
    assert len({c.id for c in new.cells}) == 2
    nbformat.validate(new)


def test_stale_papermill_error_cells_are_removed_and_origins_kept():
    nb = make_notebook(["# md: error", ("a = 1", ["parameters"]), "b = a"])
    nb.cells[0].metadata["tags"] = ["papermill-error-cell-tag"]
    injection = parameterize(nb, {"a": 2})
    assert len(injection.notebook.cells) == 3
    assert injection.origins == (1, None, 2)


def test_nest_merges_in_order():
    assert nest([("opt", {"a": 1, "b": 2}), ("opt.a", 3)]) == {"opt": {"a": 3, "b": 2}}
    assert nest([("opt.a", 3), ("opt", {"b": 2})]) == {"opt": {"a": 3, "b": 2}}
    assert nest([("opt.a", 3), ("opt", 5)]) == {"opt": 5}
