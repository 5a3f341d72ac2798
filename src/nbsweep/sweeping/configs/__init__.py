"""Sweep configs: ``loading`` reads them (YAML files, notebooks' own ``wandb.sweep``);
``validation`` (the whole config), ``parameter_rules`` (its ``parameters:``) and
``value_checks`` (the words they share) hold W&B's rules as pure functions; ``checking``
puts loading and rules together with the program notebook's parameters; ``yamlfile`` reads
YAML as people who write 1e-5 mean it."""

from nbsweep.sweeping.configs.checking import CheckedSweep, check_sweep
from nbsweep.sweeping.configs.loading import load_sweep, notebook_sweep_config, yaml_text
from nbsweep.sweeping.configs.validation import validate, with_default_command

__all__ = [
    "CheckedSweep",
    "check_sweep",
    "load_sweep",
    "notebook_sweep_config",
    "validate",
    "with_default_command",
    "yaml_text",
]
