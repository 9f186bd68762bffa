"""dmltf.registry: the one registry helper and the one signature reader."""
import sys

import keras
import pytest

from dmltf.registry import Registry, hyperparameters, import_submodules


def test_lookup_names_and_clear_errors():
    reg = Registry("widget", on_register=lambda name, cls: type(f"Registered{cls.__name__}", (cls,), {}))

    @reg.register("a")
    class A:
        pass

    assert reg.names() == ["a"] and "a" in reg and reg.lookup("a") is A and A.__name__ == "RegisteredA"
    with pytest.raises(ValueError, match="Unknown widget 'b'; valid names: a"):
        reg.lookup("b")
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.add("a", object)


def test_hyperparameters_follow_kwargs_and_stop_at_the_framework():
    class Base:
        def __init__(self, alpha=1.0, shared=3, **kwargs):
            pass

    class Child(Base):
        def __init__(self, beta="x", shared=4, obj=None, items=(1.0, 2.0), **kwargs):
            super().__init__(**kwargs)

    class Closed(Base):
        def __init__(self, gamma=True):
            super().__init__()

    class Layer(keras.layers.Layer):
        def __init__(self, delta=2, **kwargs):
            super().__init__(**kwargs)

    # The subclass's own default wins; None and objects are no flags; a closed __init__ ends the walk.
    assert hyperparameters(Child) == {"beta": "x", "shared": 4, "items": (1.0, 2.0), "alpha": 1.0}
    assert hyperparameters(Child, exclude={"alpha"}) == {"beta": "x", "shared": 4, "items": (1.0, 2.0)}
    assert hyperparameters(Closed) == {"gamma": True}
    assert hyperparameters(Layer) == {"delta": 2}  # not Keras's trainable, autocast, ...


def test_a_package_registers_every_module_it_holds(tmp_path, monkeypatch):
    package = tmp_path / "plugins"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from dmltf.registry import Registry, import_submodules\n"
        "THINGS = Registry('thing')\n"
        "import_submodules(__name__, __path__)\n")
    for name in ("one", "two"):
        (package / f"{name}.py").write_text(
            f"from plugins import THINGS\n\n@THINGS.register('{name}')\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import plugins

        assert plugins.THINGS.names() == ["one", "two"]
    finally:
        for name in [m for m in sys.modules if m == "plugins" or m.startswith("plugins.")]:
            del sys.modules[name]


def test_import_submodules_reports_a_broken_module(tmp_path, monkeypatch):
    package = tmp_path / "broken_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "bad.py").write_text("raise RuntimeError('bad plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="bad plugin"):
        import_submodules("broken_plugins", [str(package)])
    sys.modules.pop("broken_plugins", None)
