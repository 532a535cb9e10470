"""The root suite runs without the integrations: no module of it imports LangChain or LlamaIndex when it loads.

A test that reaches into a framework imports it inside the test, after ``pytest.importorskip``,
so ``pytest tests`` collects and passes with neither framework installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

FRAMEWORKS = {"langchain", "langchain_core", "langchain_openai", "langchain_aligned_llm", "langgraph", "llama_index"}


def _imported_when_loaded(path: Path) -> list[str]:
    """The modules a file imports in its top-level statements."""
    names = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_root_test_module_imports_a_framework_when_it_loads():
    offenders = {
        path.name: found
        for path in sorted(Path(__file__).parent.glob("*.py"))
        if (found := [name for name in _imported_when_loaded(path) if name.split(".")[0] in FRAMEWORKS])
    }
    assert offenders == {}, "import these inside the tests that need them, after pytest.importorskip"
