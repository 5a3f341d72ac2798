import json

import pytest

from nbsweep.api.arguments import ParameterSources, collect, parse_value, read_param_file
from nbsweep.errors import UsageError
from nbsweep.notebook.injection import nest


def values(**sources):
    return nest(collect(ParameterSources(**sources)))


@pytest.mark.parametrize(
    "text,expected",
    [
        ("0.1", 0.1),
        ("1e-5", 1e-5),
        ("3", 3),
        ("True", True),
        ("None", None),
        ("[64, 32]", [64, 32]),
        ("{'name': 'adam', 'beta1': 0.9}", {"name": "adam", "beta1": 0.9}),
        ("adam", "adam"),
        ("'quoted'", "quoted"),
        ("__import__('os')", "__import__('os')"),
        ("", ""),
        ("(1,", "(1,"),
    ],
)
def test_parse_value(text, expected):
    assert parse_value(text) == expected


def test_wandb_args_forms():
    tokens = [
        "--lr=0.1",
        "--layers=[64, 32]",
        "--flag=True",
        "--opt={'name': 'adam', 'beta1': 0.9}",
        "--spaced",
        "-0.5",
        "--bare",
        "--x=1",
    ]
    assert values(tokens=tokens) == {
        "lr": 0.1,
        "layers": [64, 32],
        "flag": True,
        "opt": {"name": "adam", "beta1": 0.9},
        "spaced": -0.5,
        "bare": True,
        "x": 1,
    }


def test_no_hyphens_json_and_hydra_forms(tmp_path):
    config_file = tmp_path / "config-run.json"
    config_file.write_text(json.dumps({"from_file": 1}))
    assert values(tokens=["lr=0.1", "+a=1", "++b=x", '{"c": [1, 2]}', str(config_file)]) == {
        "lr": 0.1,
        "a": 1,
        "b": "x",
        "c": [1, 2],
        "from_file": 1,
    }


def test_precedence(tmp_path):
    low = tmp_path / "low.yaml"
    low.write_text("lr: 1e-5\nepochs: 1\nopt: {beta1: 0.1, name: sgd}\nkeep: 7\n")
    param_path = tmp_path / "config-abc.yaml"
    param_path.write_text(
        "wandb_version: 1\n_wandb: {value: {cli_version: x}}\n"
        "epochs: {value: 3}\nname: {value: 'None'}\n"
    )
    result = values(
        files=[str(low)],
        args_json=['{"lr": 0.01, "epochs": 2}'],
        tokens=["--lr=0.02", "--opt.beta1=0.2", "--epochs=99", "--name=None"],
        param_path=str(param_path),
        pairs=[("epochs", "4")],
        raw_pairs=[("tag", "007")],
    )
    assert result == {
        "lr": 0.02,  # ${args} beat --args-json and the file; 1e-5 was read as a number
        "epochs": 4,  # -p beats the param file, which beat ${args}
        "opt": {"beta1": 0.2, "name": "sgd"},
        "keep": 7,
        "name": "None",  # the param file keeps YAML's string where ${args} said None
        "tag": "007",
    }


def test_read_param_file_like_wandb_agent_writes_it(tmp_path):
    path = tmp_path / "config-run.yaml"
    path.write_text(
        "wandb_version: 1\n\nlr:\n  desc: null\n  value: 0.001\nopt:\n  value:\n    beta1: 0.9\n"
    )
    assert read_param_file(str(path)) == [("lr", 0.001), ("opt", {"beta1": 0.9})]


@pytest.mark.parametrize(
    "sources,message",
    [
        ({"tokens": ["-x"]}, "unknown option '-x'"),
        ({"tokens": ["stray"]}, "unexpected argument 'stray'"),
        ({"args_json": ["{bad"]}, "not valid JSON"),
        ({"args_json": ["[1]"]}, "must be a JSON object"),
        ({"files": ["/nonexistent/params.yaml"]}, "cannot read parameters file"),
        ({"param_path": "/nonexistent/config.yaml"}, "cannot read WANDB_SWEEP_PARAM_PATH"),
    ],
)
def test_bad_input_is_a_usage_error(sources, message):
    with pytest.raises(UsageError, match=message):
        collect(ParameterSources(**sources))


def test_malformed_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\nb: [unclosed\n")
    with pytest.raises(UsageError, match=r"not valid YAML \(line"):
        collect(ParameterSources(files=[str(bad)]))
