"""docs/migrating.md against the code and the tests it cites (no math: parsing and signatures).

Every table of the guide has the columns ``their call | dmltf call | numbers | differences``.
Checked here: each ``numbers`` cell is ``same (<test ids>)``, ``differs: <why>`` or ``no recorded
comparison``; every test id anywhere in the guide names a test function of a file of tests/ and,
exactly where the function is parametrised, one of the case ids pytest gives it (computed from
the function's ``parametrize`` marks, the module imported); every code span of the dmltf column
parses as Python, and each call in it names a registered loss / miner / regularizer / distance /
sampler (or one of the unregistered classes and functions the guide uses) with constructor
arguments that exist, metric names that ``evaluate`` accepts and registered names for
``distance=`` / ``miner=`` / regularizer specs / nested loss specs.
"""
import ast
import importlib
import inspect
import itertools
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "migrating.md")
HEADER = ["their call", "dmltf call (arguments that reproduce its numbers)", "numbers", "differences"]
LIBRARIES = ("tensorflow-addons", "TensorFlow Similarity", "pytorch-metric-learning")
TEST_ID = re.compile(r"tests/[\w/]+\.py::\w+(?:\[[^\]\s]+\])?")
NUMBERS = re.compile(r"same \((?P<ids>.+)\)|differs: \S.*|no recorded comparison")
CODE = re.compile(r"`([^`]+)`")
INDEX_METHODS = ("build", "search", "calibrate", "is_match", "save", "load")  # as Index.m or index.m
TENSORFLOW_CALLS = {"evaluate", "samplers.get", "MetricLearner", "RetrievalEvaluation", "learner.save",
                    "keras.models.load_model", *(f"{owner}.{m}" for owner in ("Index", "index") for m in INDEX_METHODS)}


# ------------------------------------------------------------------------------- the guide
def parse_tables(text):
    """[(section heading, line number, [4 cells])] of every table row of the guide."""
    rows, section, in_table = [], None, False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells == HEADER:
            in_table = True
        elif in_table and not set(line) <= set("|-: "):
            rows.append((section, number, cells))
        elif not in_table:
            raise AssertionError(f"docs/migrating.md:{number}: a table row outside a table with the header {HEADER}")
    return rows


@pytest.fixture(scope="module")
def rows():
    with open(GUIDE, encoding="utf-8") as f:
        return parse_tables(f.read())


@pytest.mark.backend_neutral
def test_every_library_has_a_table_of_four_columns_and_numbers_in_the_agreed_form(rows):
    for library in LIBRARIES:
        assert any(section.startswith(library) for section, _, _ in rows), f"no table for {library}"
    for section, number, cells in rows:
        where = f"docs/migrating.md:{number} ({section})"
        assert len(cells) == 4, f"{where}: {len(cells)} cells, expected 4 (a '|' inside a cell?)"
        assert cells[0] and cells[1], f"{where}: empty call cell"
        match = NUMBERS.fullmatch(cells[2])
        assert match, f"{where}: numbers cell {cells[2]!r} is not same (...), differs: ..., no recorded comparison"
        if match["ids"]:
            ids = [part.strip() for part in match["ids"].split(";")]
            assert all(TEST_ID.fullmatch(i) for i in ids), f"{where}: {match['ids']!r} is not test ids joined by ';'"
            assert CODE.search(cells[1]), f"{where}: 'same' numbers but no dmltf call"
        assert CODE.search(cells[1]) or cells[1].startswith("none"), f"{where}: the dmltf cell is neither calls nor none"


@pytest.mark.backend_neutral
def test_the_semantic_traps_come_first_and_name_the_issues_examples():
    with open(GUIDE, encoding="utf-8") as f:
        text = f.read()
    traps = text.split("## Semantic traps", 1)[1].split("\n## ", 1)[0]
    assert text.index("## Semantic traps") < min(text.index(f"## {name}") for name in LIBRARIES)
    for words in ("smooth_loss=True", "soft=True, margin=0.0", "MultiSimilarityLoss", "normalize_embeddings",
                  "squared", "(embeddings, labels)", "reduction="):
        assert words in traps, words


# --------------------------------------------------------------------------- cited tests
def parameter_id(value, argname, index):
    """The id pytest gives one parameter value (strings, numbers, None, bools, named objects)."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return str(value)
    name = getattr(value, "__name__", None)
    return name if isinstance(name, str) else f"{argname}{index}"


def case_ids(module, function):
    """The ids of ``module.function``'s cases as pytest builds them (the parametrize marks in the
    order pytest applies them, the one nearest the def first); None: not parametrised."""
    marks = [m for m in getattr(getattr(module, function), "pytestmark", []) if m.name == "parametrize"]
    if not marks:
        return None
    per_mark = []
    for mark in marks:
        argnames, argvalues = mark.args[0], list(mark.args[1])
        names = [n.strip() for n in argnames.split(",")] if isinstance(argnames, str) else list(argnames)
        ids = mark.kwargs.get("ids")
        if ids is None:
            ids = []
            for index, value in enumerate(argvalues):
                if getattr(value, "id", None) is not None:  # pytest.param(..., id=...)
                    ids.append(value.id)
                    continue
                values = getattr(value, "values", value) if len(names) > 1 or hasattr(value, "marks") else (value,)
                ids.append("-".join(parameter_id(v, n, index) for v, n in zip(values, names)))
        per_mark.append([str(i) for i in ids])
    return {"-".join(parts) for parts in itertools.product(*per_mark)}


def cited_test_problem(test_id):
    """Why ``tests/file.py::name[case]`` does not name a test pytest collects, or None."""
    path, _, rest = test_id.partition("::")
    function, _, case = rest.partition("[")
    case = case[:-1] if case else None
    if os.path.dirname(path) != "tests" or not os.path.isfile(os.path.join(ROOT, path)):
        return f"{path} is no test file of tests/"
    module = importlib.import_module(os.path.basename(path)[: -len(".py")])  # tests/ is on sys.path
    if not callable(getattr(module, function, None)):
        return f"{path} has no 'def {function}'"
    ids = case_ids(module, function)
    if ids is None:
        return f"{function} is not parametrised: no [{case}]" if case is not None else None
    if case not in ids:
        return f"{function} has no case [{case}] (its cases: {', '.join(sorted(ids))})"
    return None


def test_every_cited_test_exists():
    with open(GUIDE, encoding="utf-8") as f:
        cited = sorted(set(TEST_ID.findall(f.read())))
    assert len(cited) > 50
    problems = {test_id: cited_test_problem(test_id) for test_id in cited}
    assert not {k: v for k, v in problems.items() if v}


def test_the_cited_test_check_refuses_what_pytest_would_not_collect():
    assert cited_test_problem("tests/test_pml_losses.py::test_values_and_gradients_match_pml[ntxent]") is None
    assert cited_test_problem("tests/test_pml_miners.py::test_selection_equals_pml[refs-hdc]") is None
    for bad, why in [("tests/test_nothing_here.py::test_x", "no test file"),
                     ("tests/fixtures/pml/record_pml_losses.py::main", "no test file"),
                     ("tests/test_pml_losses.py::test_not_defined", "no 'def"),
                     ("tests/test_pml_losses.py::test_values_and_gradients_match_pml", "no case [None]"),
                     ("tests/test_pml_losses.py::test_values_and_gradients_match_pml[no_such_case]", "no case"),
                     ("tests/test_pml_miners.py::test_selection_equals_pml[refs]", "no case [refs]"),
                     ("tests/test_pml_miners.py::test_selection_equals_pml[hdc-refs]", "no case"),
                     ("tests/test_pml_losses.py::test_multiple_losses_parts_and_lr_multiplier[x]", "not parametrised")]:
        assert why in (cited_test_problem(bad) or ""), bad


# ------------------------------------------------------------------- calls of the dmltf column
def constructor_parameters(cls):
    """Keyword names a dmltf class accepts: its ``__init__``'s and, while each passes
    ``**kwargs`` on, its dmltf bases' (Keras' own Layer arguments are not counted)."""
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if not klass.__module__.startswith("dmltf"):
            break
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def positional_count(function):
    params = inspect.signature(function).parameters.values()
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params if p.name not in ("self", "cls"))


class CallChecker:
    """Problems of the calls of one expression; ``checks`` maps a callee's source text to a
    function (call node) -> [problems]. Callees in ``deferred`` are checked by another test."""

    def __init__(self, checks, deferred=()):
        self.checks, self.deferred = checks, set(deferred)

    def problems(self, code):
        try:
            tree = ast.parse(code, mode="eval")
        except SyntaxError:
            return [f"{code!r} is not a Python expression"]
        out = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                callee = ast.unparse(node.func)
                if callee in self.checks:
                    out += [f"{ast.unparse(node)}: {p}" for p in self.checks[callee](node)]
                elif callee not in self.deferred:
                    out.append(f"{ast.unparse(node)}: {callee} is not a call the guide may use")
        return out


def literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:  # a name standing for a value (C, D, m, ...)
        return None


def check_arguments(node, cls_or_function, parameters, positional):
    problems = [f"no argument {k.arg!r} (valid: {', '.join(sorted(parameters))})"
                for k in node.keywords if k.arg not in parameters]
    if len(node.args) > positional:
        problems.append(f"{len(node.args)} positional arguments, {cls_or_function} takes {positional}")
    return problems


def registry_checks():
    """The registry ``get`` calls and the unregistered loss classes (backend-neutral packages)."""
    from dmltf import distances, losses, miners, regularizers
    from dmltf.losses.barlow_twins import BarlowTwinsLoss
    from dmltf.losses.self_supervised import SelfSupervisedLoss
    from dmltf.losses.vicreg import VICRegLoss
    from dmltf.registry import parse_spec

    def regularizer_spec(spec):
        name, params = parse_spec(spec)
        if name not in regularizers.names():
            return [f"no regularizer {name!r}"]
        return [f"regularizer {name} has no {k!r}" for k in params if k not in
                constructor_parameters(regularizers.get_class(name))]

    def loss_spec(spec):
        """A registered name, a get_config dict of one ("dmltf>name"), a tuple of them, or a name."""
        if spec is None:
            return []
        if isinstance(spec, (tuple, list)):
            return [p for part in spec for p in loss_spec(part)]
        if isinstance(spec, dict):
            package, _, name = spec.get("class_name", "").partition(">")
            if package != "dmltf" or name not in losses.names():
                return [f"loss dict {spec!r} names no registered loss"]
            return [f"loss {name} has no {k!r}" for k in spec.get("config", {})
                    if k not in constructor_parameters(losses.get_class(name))]
        return [] if spec in losses.names() else [f"no loss {spec!r}"]

    def values(node):
        """Problems of the literal keyword values that name other components."""
        out = []
        for k in node.keywords:
            value = literal(k.value)
            if not isinstance(value, (str, dict, tuple, list)):
                continue
            if k.arg == "distance" and value not in distances.names():
                out.append(f"no distance {value!r}")
            elif k.arg == "miner" and value not in miners.names():
                out.append(f"no miner {value!r}")
            elif k.arg in ("embedding_regularizer", "weight_regularizer"):
                out += regularizer_spec(value)
            elif k.arg in ("loss", "losses"):
                out += loss_spec(value)
        return out

    def registry_get(registry, kind):
        def check(node):
            name = literal(node.args[0]) if node.args else None
            if not isinstance(name, str):
                return [f"the first argument must be a {kind} name"]
            if registry is regularizers:  # a spec name[:key=value,...]; keywords go to the class too
                name = parse_spec(name)[0]
            if name not in registry.names():
                return [f"no {kind} {name!r} (valid: {', '.join(registry.names())})"]
            spec_problems = regularizer_spec(literal(node.args[0])) if registry is regularizers else []
            cls = registry.get_class(name)
            return spec_problems + check_arguments(node, "get", constructor_parameters(cls), 1) + values(node)
        return check

    def loss_class(cls):
        def check(node):
            first = [loss_spec(literal(node.args[0]))] if node.args else []
            return (check_arguments(node, cls.__name__, constructor_parameters(cls), positional_count(cls.__init__))
                    + [p for problems in first for p in problems] + values(node))
        return check

    return {
        "losses.get": registry_get(losses, "loss"),
        "miners.get": registry_get(miners, "miner"),
        "regularizers.get": registry_get(regularizers, "regularizer"),
        "distances.get": lambda node: ([] if node.args and literal(node.args[0]) in distances.names()
                                       else [f"no distance (valid: {', '.join(distances.names())})"]),
        **{cls.__name__: loss_class(cls) for cls in (SelfSupervisedLoss, VICRegLoss, BarlowTwinsLoss)},
    }


def tensorflow_checks():
    """evaluate, the index, the samplers, MetricLearner and its saving, the retrieval callback
    (TensorFlow-side packages)."""
    import keras

    from dmltf.callbacks import RetrievalEvaluation
    from dmltf.data import samplers
    from dmltf.evaluation import metrics
    from dmltf.index import Index
    from dmltf.methods import MetricLearner

    def function(f, name):
        named = {p.name for p in inspect.signature(f).parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self", "cls"}
        return lambda node: check_arguments(node, name, named, positional_count(f))

    def with_metrics(check):
        """``check`` and the names of a literal ``metrics=`` checked by ``evaluate``'s own check."""
        def checked(node):
            problems = check(node)
            for k in node.keywords:
                if k.arg == "metrics":
                    try:
                        metrics.check_metrics(literal(k.value))
                    except (ValueError, TypeError) as error:
                        problems.append(str(error)[:120])
                if k.arg == "average" and literal(k.value) not in metrics.AVERAGES:
                    problems.append(f"no average {literal(k.value)!r}")
            return problems
        return checked

    def sampler(node):
        name = literal(node.args[0]) if node.args else None
        if name not in samplers.names():
            return [f"no sampler {name!r} (valid: {', '.join(samplers.names())})"]
        return check_arguments(node, "samplers.get", constructor_parameters(samplers.get_class(name)), 1)

    index_methods = {f"{owner}.{m}": function(getattr(Index, m), m) for owner in ("Index", "index")
                     for m in INDEX_METHODS}
    return {"evaluate": with_metrics(function(metrics.evaluate, "evaluate")), "samplers.get": sampler,
            "RetrievalEvaluation": with_metrics(function(RetrievalEvaluation.__init__, "RetrievalEvaluation")),
            "MetricLearner": function(MetricLearner.__init__, "MetricLearner"),
            "learner.save": function(MetricLearner.save, "save"),
            "keras.models.load_model": function(keras.models.load_model, "load_model"), **index_methods}


def dmltf_code(rows):
    return [(number, code) for _, number, cells in rows for code in CODE.findall(cells[1])]


@pytest.mark.backend_neutral
def test_registry_calls_name_registered_components_and_real_arguments(rows):
    checker = CallChecker(registry_checks(), deferred=TENSORFLOW_CALLS)
    problems = [f"docs/migrating.md:{n}: {p}" for n, code in dmltf_code(rows) for p in checker.problems(code)]
    assert not problems, "\n".join(problems)


def test_evaluation_index_sampler_and_method_calls_have_real_arguments(rows):
    checks = tensorflow_checks()
    assert set(checks) == TENSORFLOW_CALLS
    checker = CallChecker(checks, deferred=registry_checks())
    problems = [f"docs/migrating.md:{n}: {p}" for n, code in dmltf_code(rows) for p in checker.problems(code)]
    assert not problems, "\n".join(problems)


@pytest.mark.backend_neutral
def test_the_call_check_refuses_unknown_names_arguments_and_nested_specs():
    checker = CallChecker(registry_checks())
    assert checker.problems('losses.get("triplet", margin=0.05, soft=True, miner="batch_hard")') == []
    assert checker.problems('losses.get("snr_contrastive", pos_margin=0.2, distance="euclidean")') == []  # a base's
    for bad, why in [('losses.get("tripletz")', "no loss 'tripletz'"),
                     ('losses.get("triplet", smooth_loss=True)', "no argument 'smooth_loss'"),
                     ('losses.get("triplet", distance="L2")', "no distance 'L2'"),
                     ('losses.get("triplet", miner="semihard")', "no miner 'semihard'"),
                     ('losses.get("ntxent", embedding_regularizer="lp:q=1")', "has no 'q'"),
                     ('losses.get("multiple_losses", losses=("ntxent", "nope"))', "no loss 'nope'"),
                     ('SelfSupervisedLoss({"class_name": "dmltf>supcon", "config": {"tau": 1}})', "has no 'tau'"),
                     ('miners.get("hdc", percentage=0.5)', "no argument 'percentage'"),
                     ('regularizers.get("l2")', "no regularizer 'l2'"),
                     ('losses.get("pn", soft=False', "not a Python expression"),
                     ('tfa.losses.TripletSemiHardLoss()', "not a call the guide may use")]:
        assert any(why in p for p in checker.problems(bad)), (bad, checker.problems(bad))


def test_the_tensorflow_side_check_refuses_bad_metrics_and_arguments():
    checker = CallChecker(tensorflow_checks())
    assert checker.problems('evaluate(x, y, metrics=("map@10", "mrr"), average="macro")') == []
    for bad, why in [('evaluate(x, y, metrics=("mean_average_precision",))', "Unknown metric"),
                     ('evaluate(x, y, avg_of_avgs=True)', "no argument 'avg_of_avgs'"),
                     ('evaluate(x, y, average="weighted")', "no average"),
                     ('index.search(x, k=1, radius=2)', "no argument 'radius'"),
                     ('samplers.get("m_per_class", classes_per_batch=2)', "no sampler"),
                     ('samplers.get("balanced", examples_per_class_per_batch=2)', "no argument"),
                     ('RetrievalEvaluation(x, y, metrics=("recall@K",), tb_logdir="logs")', "no argument 'tb_logdir'"),
                     ('RetrievalEvaluation(x, y, metrics=("recall@K",))', "Unknown metric"),
                     ('MetricLearner(model, loss, optimizer="sgd")', "no argument 'optimizer'")]:
        assert any(why in p for p in checker.problems(bad)), (bad, checker.problems(bad))
