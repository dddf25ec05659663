"""Every tutorial in ``notebooks/`` runs top to bottom, in a real kernel (nbclient), against the
pipenb server inside a real JupyterLab started as ``make run`` starts it, with its agent.

The kernel gets ``PIPENB_URL`` and ``PIPENB_TOKEN`` as a kernel started by that JupyterLab does
(``test_lab.py`` checks that one does); any error in any cell fails the test.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from support import REPO_ROOT
from support.labproc import LabProcess

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_the_tutorials_are_there() -> None:
    names = {p.stem for p in NOTEBOOKS}
    assert {"quickstart", "parsing-logs", "deploying", "testing-pipes"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(
    path: Path, lab: LabProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPENB_URL", lab.url)
    monkeypatch.setenv("PIPENB_TOKEN", lab.token)
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{path.name} is committed with outputs: clear them"
    )
    client = NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    # a cell tagged raises-exception shows a mistake on purpose (it must fail, issue 13)
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code" and "raises-exception" not in c.metadata.get("tags", [])
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors
    # every code cell ran
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    if path.stem == "parsing-logs":
        images = [
            o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
        ]
        assert images, "the levels-over-time plot is missing"
