"""The task abstraction: one registry of kinds, no task-kind branches outside trainer/tasks/."""

from __future__ import annotations

import ast
import pathlib
import typing

import numpy as np

from trainer import features
from trainer.tasks import REGISTRY, TaskConfig, make_task
from trainer.tasks.config import TaskKind

REPO = pathlib.Path(__file__).resolve().parents[1]
KINDS = set(typing.get_args(TaskKind))


def test_registry_holds_every_configurable_kind_and_each_class_names_its_own():
    assert set(REGISTRY) == KINDS
    for kind, cls in REGISTRY.items():
        assert cls.kind == kind and type(make_task(TaskConfig(name="t", kind=kind, num_classes=2))) is cls


def _branches_on_a_kind(tree: ast.AST) -> list[int]:
    """Lines comparing something with a task-kind literal (==, !=, in, not in a tuple/list/set of them)."""
    def literals(node):
        if isinstance(node, ast.Constant):
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return {e.value for e in node.elts if isinstance(e, ast.Constant)}
        return set()

    lines = []
    in_literal = {id(n) for node in ast.walk(tree) if isinstance(node, ast.Subscript)
                  and getattr(node.value, "id", getattr(node.value, "attr", "")) == "Literal" for n in ast.walk(node.slice)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and id(node) not in in_literal and literals(node) & KINDS:
            lines.append(node.lineno)  # a table of kinds to test against
            continue
        if isinstance(node, ast.Compare) and any(literals(n) & KINDS for n in [node.left, *node.comparators]):
            lines.append(node.lineno)
        if isinstance(node, ast.match_case) and literals(getattr(node.pattern, "value", None) or ast.Tuple(elts=[])) & KINDS:
            lines.append(node.pattern.lineno)
    return sorted(set(lines))


def test_no_code_outside_trainer_tasks_branches_on_a_task_kind():
    found = {}
    for folder in ("bertkeras", "trainer", "components", "pipelines", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            if "tasks" in path.relative_to(REPO).parts[1:2]:
                continue
            lines = _branches_on_a_kind(ast.parse(path.read_text(), str(path)))
            if lines:
                found[str(path.relative_to(REPO))] = lines
    assert not found, f"branches on a task kind outside trainer/tasks/: {found}"


def test_the_check_itself_finds_a_branch():
    assert _branches_on_a_kind(ast.parse('if task.kind == "sentence":\n    pass\n')) == [1]
    assert _branches_on_a_kind(ast.parse('x = kind in ("masked_lm", "other")\n')) == [1]
    assert _branches_on_a_kind(ast.parse('LM = ("masked_lm", "causal_lm")\n')) == [1]
    assert _branches_on_a_kind(ast.parse('x = kind == "constant"\nLevel = Literal["sentence", "token"]\n')) == []


def _arrays(task, token_ids, labels, weights):
    token_ids = np.asarray(token_ids)
    return {features.TOKEN_IDS: token_ids, features.PADDING_MASK: (token_ids > 0).astype(np.int32),
            task.labels_key(): np.asarray(labels), task.weights_key(): np.asarray(weights, np.float32)}


def test_bag_of_words_baseline_learns_which_words_mark_a_class():
    """Class 1 examples hold token 7, class 0 examples token 8, among random filler: TF-IDF + a linear softmax
    finds them; rows with weight 0 (another task's examples) are left out."""
    rng = np.random.default_rng(0)
    task = make_task(TaskConfig(name="topic", kind="sentence", num_classes=2))

    def split(n):
        labels = rng.integers(0, 2, n)
        ids = np.zeros((n, 12), np.int64)
        ids[:, 0], ids[:, 1:10] = 101, rng.integers(20, 60, (n, 9))
        ids[np.arange(n), rng.integers(1, 10, n)] = np.where(labels == 1, 7, 8)
        ids[:, 10] = 102
        return ids, labels

    train_ids, train_labels = split(500)
    eval_ids, eval_labels = split(100)
    weights = np.ones(500)
    weights[:300] = 0  # not this task's examples: their (flipped) labels would teach the opposite
    train_labels = np.where(weights > 0, train_labels, 1 - train_labels)
    metrics = task.baseline(_arrays(task, train_ids, train_labels, weights),
                            _arrays(task, eval_ids, eval_labels, np.ones(100)))
    assert metrics["baseline_accuracy"] >= 0.95 and metrics["baseline_macro_f1"] >= 0.95  # chance: 0.5


def test_lookup_baseline_answers_each_words_training_label():
    names = ["B-CAP", "O"]
    task = make_task(TaskConfig(name="case", kind="token", num_classes=2)).__class__(
        TaskConfig(name="case", kind="token"), 2, names)
    # [CLS] word pieces [SEP]: word (30,) is B-CAP, (31, 32) is two pieces labelled O, (33,) is O.
    train = _arrays(task, [[101, 30, 31, 32, 33, 102, 0], [101, 33, 30, 102, 0, 0, 0]],
                    [[0, 0, 1, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0]], [[0, 1, 1, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0]])
    # Evaluation: (31, 32) and 30 as trained; 34 unseen -> the most frequent training label (O).
    evaluation = _arrays(task, [[101, 31, 32, 30, 34, 102, 0]], [[0, 1, 0, 0, 0, 0, 0]], [[0, 1, 0, 1, 1, 0, 0]])
    metrics = task.baseline(train, evaluation)
    assert metrics["baseline_accuracy"] == 2 / 3  # the unseen word 34 was B-CAP
    assert metrics["baseline_span_precision"] == 1.0 and metrics["baseline_span_recall"] == 0.5
