"""Every notebook, in notebooks/ (tutorials) and beside its study in studies/*/, runs top to bottom
in its quick mode, and is committed stripped.

The notebooks are found when the tests are collected, so a new notebook is tested without
being listed here. Quick mode (`OFFRL_NOTEBOOK_QUICK=1`) gives each notebook tiny budgets;
the kernel inherits this process's environment, so it also gets conftest's temporary
Minari store and disabled W&B.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted([*(REPO / "notebooks").glob("*.ipynb"), *(REPO / "studies").glob("*/*.ipynb")])
# Per cell, only to stop a hung kernel. policy_extraction's first cell runs the whole quick
# study: 110 s on 2 cores here, 223 s in issue 24's report, and it failed the suite at the
# old 300 s on a loaded machine. 900 s is at least 4x either idle figure
# (docs/testing.md).
CELL_TIMEOUT = 900


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_stripped(path: Path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {index} has outputs: strip them"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs_in_quick_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OFFRL_NOTEBOOK_QUICK", "1")
    # Quick mode writes to tempfile directories: keep them inside this test's tmp_path.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    notebook = nbformat.read(path, as_version=4)
    # The installed 'python3' kernelspec launches `python`, which jupyter_client replaces by
    # sys.executable; a last cell checks that, so the kernel imports this checkout's offrl.
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    # The working directory is the notebook's own, as when Jupyter opens it.
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    assert notebook.cells[-1].outputs[0]["text"].strip() == sys.executable
