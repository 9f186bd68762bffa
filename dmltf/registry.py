"""The one registry helper: a name -> component table per family, and the one signature reader.

Every component family (losses, miners, distances, initializers, methods, backbones,
samplers, augmentation and preprocessing presets, metrics) is a :class:`Registry`; a module
registers what it defines when it is imported, and the family's package imports all of its
modules (:func:`import_submodules`), so ``names()`` is complete once the package is imported.

:func:`hyperparameters` is how a component's constructor becomes flags: the named parameters
with a plain default (bool, int, float, str, or a tuple/list of them), read along the class
hierarchy for as long as each ``__init__`` passes ``**kwargs`` on to its base.

Example:
    >>> from dmltf.registry import Registry, hyperparameters
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... class Square:
    ...     def __init__(self, side=1.0, name="sq", **kwargs):
    ...         self.side = side
    >>> shapes.names(), hyperparameters(shapes.lookup("square"), exclude={"name"})
    (['square'], {'side': 1.0})
    >>> shapes.lookup("circle")
    Traceback (most recent call last):
    ...
    ValueError: Unknown shape 'circle'; valid names: square
"""
import importlib
import inspect
import pkgutil

PLAIN = (bool, int, float, str)


def parse_spec(spec, keys=None, *, what="spec", kind="key"):
    """(name, {key: value text}) of a spec ``name[:key=value,...]`` (``--eval_kmeans``,
    ``--pooling``, ``--embedding_regularizer``). ``keys(name)``, when given, returns the valid
    keys of that name (and may refuse the name itself, before any item is read). An item that is
    not ``key=value`` with a non-empty key and value (and a valid key) is a ValueError naming the
    spec, ``what`` it is and the ``kind`` of its keys.

    >>> parse_spec("lp:p=1, power=2")
    ('lp', {'p': '1', 'power': '2'})
    """
    name, _, rest = str(spec).partition(":")
    name = name.strip()
    allowed = None if keys is None else keys(name)
    params = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = (t.strip() for t in item.partition("="))
        if not eq or not key or not value or (allowed is not None and key not in allowed):
            article = "an" if kind[0] in "aeiou" else "a"
            valid = "" if allowed is None else f" with {article} {kind} of {', '.join(allowed)}"
            raise ValueError(f"{what} {spec!r}: {item!r} is not {kind}=value{valid}")
        params[key] = value
    return name, params


def number_or_text(text):
    """A spec value as an int, else a float, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Registry:
    """Components of one family by name (a class, a builder function or a spec object).

    ``on_register(name, component)`` may return a replacement to store (e.g. a Keras
    serialisable wrapper); the decorator returns what was stored.
    """

    def __init__(self, kind, on_register=None):
        self.kind = kind
        self._entries = {}
        self._on_register = on_register

    def register(self, name):
        """Decorator registering its target under ``name``."""
        def wrap(component):
            return self.add(name, component)

        return wrap

    def add(self, name, component):
        if name in self._entries and self._entries[name] is not component:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if self._on_register is not None:
            component = self._on_register(name, component)
        self._entries[name] = component
        return component

    def names(self):
        return sorted(self._entries)

    def lookup(self, name):
        if name not in self._entries:
            raise ValueError(f"Unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        return self._entries[name]

    def items(self):
        return sorted(self._entries.items())

    def __contains__(self, name):
        return name in self._entries


def import_submodules(package_name, package_path):
    """Imports every module of a package (sorted by name), so that each registers what it
    defines: a new component is one new file, with no import list to edit."""
    for module in sorted(m.name for m in pkgutil.iter_modules(package_path)):
        importlib.import_module(f"{package_name}.{module}")


def is_plain(value):
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, PLAIN) for v in value)
    return isinstance(value, PLAIN)


# Framework bases end the walk: their constructor options (trainable, dtype, ...) are no
# hyper-parameters of a component.
_FRAMEWORKS = ("keras", "tensorflow", "builtins")


def constructor_parameters(cls):
    """Named constructor parameters of ``cls`` (``inspect.Parameter``), following ``**kwargs``
    into the bases up to the framework's (Keras) classes: a subclass's own parameter wins over a
    base's of the same name."""
    params = {}
    for klass in cls.__mro__ if inspect.isclass(cls) else (cls,):
        if inspect.isclass(klass) and klass.__module__.split(".")[0] in _FRAMEWORKS:
            break
        init = vars(klass).get("__init__") if inspect.isclass(klass) else klass
        if init is None:
            continue
        forwards = False
        for p in inspect.signature(init).parameters.values():
            if p.kind == p.VAR_KEYWORD:
                forwards = True
            elif p.kind != p.VAR_POSITIONAL and p.name != "self":
                params.setdefault(p.name, p)
        if not forwards:
            break
    return params


def hyperparameters(cls, exclude=()):
    """{name: default} of the plain-valued constructor parameters (see the module docstring)."""
    return {name: p.default for name, p in constructor_parameters(cls).items()
            if name not in exclude and p.default is not p.empty and is_plain(p.default)}
