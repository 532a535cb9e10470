"""The notebooks run offline: notebooks/conftest.py blocks internet sockets inside the kernel.

Each case runs ``pytest --nbmake`` in a subprocess on a scratch folder holding a copy of that
conftest and one small notebook, so what is checked is the same hook ``make test`` uses.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_CONFTEST = Path(__file__).parents[1] / "notebooks" / "conftest.py"


def _run_notebook(folder: Path, *cells: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(NOTEBOOK_CONFTEST, folder / "conftest.py")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
    nbformat.write(notebook, folder / "probe.ipynb")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", "-p", "no:cacheprovider", "-q", str(folder)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "connect",
    [
        "socket.create_connection(('127.0.0.1', 9), timeout=1)",
        "socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
    ],
)
def test_a_notebook_cannot_open_an_internet_socket(tmp_path, connect):
    run = _run_notebook(tmp_path, f"import socket\n{connect}")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "SocketBlockedError" in run.stdout, run.stdout


def test_a_notebook_runs_offline_and_leaves_no_socket_files(tmp_path):
    run = _run_notebook(
        tmp_path,
        "import os\nassert os.environ['HF_HUB_OFFLINE'] == '1' and os.environ['TRANSFORMERS_OFFLINE'] == '1'",
        "print('ok')",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    sockets = [path.name for path in tmp_path.rglob("*") if path.is_socket()]
    assert sockets == [], "the kernel's ipc sockets live in a temporary folder, not next to the notebook"
