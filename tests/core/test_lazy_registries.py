"""Registries that know their built-in names before importing them, and lazy package re-exports (issue 11).

The name tables (``MODULES`` next to each registry) must agree with the registrations themselves: every module
of the package is imported and each registered name must be in the table under the module that registered it, and
every name of the table must be registered by its module. The sampler option checks used while a config is
validated must equal each sampler's ``build`` (same option names, defaults and accepted values).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from bayespeft.registry import Registry, UnknownNameError

SRC = Path(__file__).resolve().parents[2] / "src"


def import_all(package: str) -> None:
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(info.name)


def _registries():
    from bayespeft.data.registry import DATASETS
    from bayespeft.laplace.registry import STRUCTURES
    from bayespeft.models.registry import MODELS
    from bayespeft.sgmcmc.registry import SAMPLERS

    # registry, package holding every registering module, defining module of a registered object
    return {
        "models": (MODELS, "bayespeft.models", lambda entry: entry.builder.__module__),
        "datasets": (DATASETS, "bayespeft.data", lambda entry: entry.build.__module__),
        "structures": (STRUCTURES, "bayespeft.laplace", lambda cls: cls.__module__),
        "samplers": (SAMPLERS, "bayespeft.sgmcmc", lambda build: build.__module__),
    }


@pytest.mark.parametrize("what", ["models", "datasets", "structures", "samplers"])
def test_name_table_matches_the_registrations(what):
    registry, package, module_of = _registries()[what]
    table = registry.lazy_table()
    assert table, "a registry the CLI lists without imports needs its table of modules"
    import_all(package)  # every registration has run now
    missing = set(registry.names()) - set(table)
    assert sorted(table) == registry.names(), f"registered but missing from the table: {missing}"
    for name in registry.names():
        assert module_of(registry.get(name)) == table[name], f"{what} {name!r} is registered by another module"


def test_cli_lists_the_registries_it_names():
    from bayespeft.cli import REGISTRIES, registered_names

    for what, (module, attr) in REGISTRIES.items():
        assert registered_names(what) == getattr(importlib.import_module(module), attr).names()
    assert "micro_vit" in registered_names("models") and "sghmc" in registered_names("samplers")


def _never_called(theta, batch):
    raise AssertionError("build must not evaluate log_prob")


def test_sampler_option_checks_match_each_build():
    from bayespeft.sgmcmc.options import OPTION_CHECKS, check_options
    from bayespeft.sgmcmc.registry import SAMPLERS, build, sampler_options

    assert sorted(OPTION_CHECKS) == SAMPLERS.names()
    for name, check in OPTION_CHECKS.items():
        defaults = {k: p.default for k, p in inspect.signature(check).parameters.items()}
        assert defaults == sampler_options(name), f"{name}: option names/defaults differ from its build"
        check_options(name, {})  # the defaults are valid
        for option in defaults:  # every option rejects -1 the same way in both places
            with pytest.raises(ValueError) as light:
                check_options(name, {option: -1.0})
            with pytest.raises(ValueError) as built:
                build(name, _never_called, lr=1e-3, **{option: -1.0})
            assert str(light.value) == str(built.value) and option in str(light.value)
        with pytest.raises(ValueError, match=r"has no option\(s\) \['bogus'\]") as light:
            check_options(name, {"bogus": 1.0})
        with pytest.raises(ValueError) as built:
            build(name, _never_called, lr=1e-3, bogus=1.0)
        assert str(light.value) == str(built.value)


def test_sghmc_checks_the_pair_of_options():
    from bayespeft.sgmcmc.options import check_options

    check_options("sghmc", {"friction": 0.3, "noise_estimate": 0.2})
    with pytest.raises(ValueError, match=r"noise_estimate \(β̂=0.3\) must be smaller than friction \(α=0.3\)"):
        check_options("sghmc", {"friction": 0.3, "noise_estimate": 0.3})


def test_lazy_registry_knows_names_before_import_and_imports_on_get(tmp_path, monkeypatch):
    (tmp_path / "lazy_reg_target.py").write_text(textwrap.dedent("""
        from lazy_reg_home import REG
        REG.register("alpha", "the alpha object")
    """))
    (tmp_path / "lazy_reg_home.py").write_text(textwrap.dedent("""
        from bayespeft.registry import Registry
        REG = Registry("widget", lazy={"alpha": "lazy_reg_target", "beta": "lazy_reg_target"})
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from lazy_reg_home import REG

    assert REG.names() == ["alpha", "beta"] and "alpha" in REG and len(REG) == 2
    REG.check("alpha")
    assert "lazy_reg_target" not in sys.modules  # names and checks import nothing
    with pytest.raises(UnknownNameError, match="unknown widget 'alpah'. Did you mean 'alpha'.*alpha, beta"):
        REG.check("alpah")
    assert "lazy_reg_target" not in sys.modules
    assert REG.get("alpha") == "the alpha object" and "lazy_reg_target" in sys.modules
    with pytest.raises(RuntimeError, match="'beta': importing lazy_reg_target did not register it"):
        REG.get("beta")  # a table that drifted from the registrations fails loudly
    reg = Registry("thing", lazy={"x": "lazy_reg_target"})
    reg.register("y", 1)
    assert reg.names() == ["x", "y"] and reg.get("y") == 1
    with pytest.raises(ValueError, match="already registered"):
        reg.register("y", 2)


def test_lazy_package_resolves_names_and_keeps_public_names_over_submodules(tmp_path):
    pkg = tmp_path / "lazypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from bayespeft.lazy import attach
        __getattr__, __dir__, __all__ = attach(__name__, {"fit": ["fit"], "tools": ["Tool", "helper"]})
    """))
    (pkg / "fit.py").write_text("def fit():\n    return 'fitted'\n")
    (pkg / "tools.py").write_text("class Tool:\n    pass\n\ndef helper():\n    return 1\n")
    (pkg / "extra.py").write_text("VALUE = 7\n")
    script = textwrap.dedent("""
        import sys, types
        import lazypkg
        assert "lazypkg.tools" not in sys.modules and "lazypkg.fit" not in sys.modules
        assert lazypkg.__all__ == ["Tool", "fit", "helper"] and {"Tool", "fit", "helper"} <= set(dir(lazypkg))
        from lazypkg import helper
        assert helper() == 1 and "lazypkg.tools" in sys.modules and lazypkg.Tool is sys.modules["lazypkg.tools"].Tool
        import lazypkg.fit  # the import system sets lazypkg.fit = <module>: the function must stay public
        assert callable(lazypkg.fit) and not isinstance(lazypkg.fit, types.ModuleType) and lazypkg.fit() == "fitted"
        assert lazypkg.extra.VALUE == 7  # submodules by attribute, as an eager package had them
        try:
            lazypkg.missing
        except AttributeError as e:
            assert "has no attribute 'missing'" in str(e)
        else:
            raise AssertionError("no AttributeError")
        ns = {}
        exec("from lazypkg import *", ns)
        assert {"Tool", "fit", "helper"} <= set(ns) and ns["fit"]() == "fitted"
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC)])})
    assert proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize("package", ["data", "models", "adapters", "laplace", "sgmcmc", "train"])
def test_every_public_name_resolves_to_its_submodule_object(package):
    mod = importlib.import_module(f"bayespeft.{package}")
    for name in mod.__all__:
        value = getattr(mod, name)
        assert not isinstance(value, ModuleType), f"bayespeft.{package}.{name} is a module"
    import bayespeft.laplace.fit  # noqa: F401
    import bayespeft.laplace.layerwise_study  # noqa: F401

    from bayespeft import laplace

    assert callable(laplace.fit) and not isinstance(laplace.fit, ModuleType)
    assert callable(laplace.layerwise_study) and not isinstance(laplace.layerwise_study, ModuleType)
