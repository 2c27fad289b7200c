"""The task abstraction: one registry of kinds, no task-kind branches outside trainer/tasks/."""

from __future__ import annotations

import ast
import pathlib
import typing

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
    for folder in ("trainer", "components", "pipelines", "benchmarks"):
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
