"""The examples in docstrings run and print what they show, so the documentation cannot drift."""

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import flexguard


def modules_with_examples() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(flexguard.__path__, "flexguard.") if ".assets" not in m.name]
    return [n for n in names if ">>>" in (importlib.util.find_spec(n).loader.get_source(n) or "")]


def test_the_package_has_examples():
    assert {"flexguard.embedded.ordinal", "flexguard.train.embedded.crossencoder"} <= set(modules_with_examples())


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
