"""Experiment configs (application layer): the sections assembled into one validated config, YAML loading with
``base:`` inheritance and ``--set`` overrides, and readable validation messages.

* :mod:`bayespeft.config.experiment`: :class:`ExperimentConfig` (one section per stage) and :class:`OutputConfig`;
* :mod:`bayespeft.config.load`: :func:`load_config`, :func:`read_yaml`, :func:`apply_overrides`, :func:`validate`,
  :func:`dump_config` and :class:`ConfigError` (every bad key with the closest valid one, every bad value with what
  is allowed);
* :mod:`bayespeft.config.describe`: :func:`describe_section` (what ``bayespeft config`` prints).

Library packages define their own sections on :class:`bayespeft.section.Section` and never import this package.
"""

from .describe import describe_section
from .experiment import ExperimentConfig, OutputConfig
from .load import (
    ConfigError,
    apply_overrides,
    deep_merge,
    dump_config,
    flatten_keys,
    format_validation_error,
    load_config,
    read_yaml,
    validate,
)

__all__ = [
    "ConfigError", "ExperimentConfig", "OutputConfig", "apply_overrides", "deep_merge", "describe_section",
    "dump_config", "flatten_keys", "format_validation_error", "load_config", "read_yaml", "validate",
]
