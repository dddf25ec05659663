"""Issue 13, item 3: a notebook with a broken ``%%pipe`` cell fails when run by nbclient (as
``jupyter nbconvert --execute`` and notebook CI run it), and shows a short, located message."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from support import REPO_ROOT

GOOD = """%%pipe ok
input: {echo: {lines: ['a']}}
output: {discard: {}}"""

BROKEN = """%%pipe broken
input: {echo: {lines: ['a']}}
actions:
  - fliter: 'True'
output: {discard: {}}"""


def run(cells: list[str], monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in ["%load_ext pipenb", *cells]]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb


def test_a_broken_pipe_cell_fails_the_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CellExecutionError) as caught:
        run([GOOD, BROKEN, "after = 1"], monkeypatch)
    text = str(caught.value)
    assert "cell:3:5: unknown action 'fliter'" in text
    assert caught.value.ename == "MagicError"
    # the message, not the magic's internals
    assert "magics.py" not in text and "Traceback" not in text


def test_a_good_pipe_cell_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    nb = run([GOOD], monkeypatch)
    assert not any(o.output_type == "error" for c in nb.cells for o in c.outputs)
