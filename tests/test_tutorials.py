"""The tutorials in docs/tutorials run end to end, on tiny data, in a real Jupyter kernel.

Each notebook's cell tagged ``parameters`` sets its sizes; like papermill, the
test adds a cell after it with tiny values, so a notebook costs seconds. A cell
that raises fails the test.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from mlflow import MlflowClient
from nbclient import NotebookClient

from tests.conftest import REPO

TUTORIALS = sorted((REPO / "docs" / "tutorials").glob("*.ipynb"))
# tiny sets are not repeated to 25 steps an epoch: the tests check that cells run
NO_REPEATS = "trainer.min_steps_per_epoch=0"
TINY_MODEL = (
    '["model.stages=2", "model.width=8", "trainer.batch_size=16", "trainer.tta=none", '
    f'"{NO_REPEATS}"]'
)
TINY = {
    "01_binary": f"MAX_PER_CLASS = 20\nIMAGE_SIZE = 16\nEPOCHS = 2\nN_TRIALS = 2\n"
    f"FINAL_EPOCHS = 2\nEXTRA = {TINY_MODEL}",
    "02_multiclass_exercise": "MAX_PER_CLASS = 6\nIMAGE_SIZE = 16\nEPOCHS = 1\n"
    f'EXTRA = ["data.classes=[Beach,Forest,Port,Desert]", "{NO_REPEATS}"]',
    "03_multiclass_solution": "MAX_PER_CLASS = 10\nFINAL_MAX_PER_CLASS = 12\nIMAGE_SIZE = 16\n"
    "EPOCHS = 2\nFINAL_EPOCHS = 2\nN_TRIALS = 2\n"
    f'EXTRA = ["data.classes=[Beach,Forest,Port,Desert]", "trainer.batch_size=16", "{NO_REPEATS}"]'
    '\nNEXT_EXTRA = ["sweep.n_trials=2"]',  # its plan asks for 6: one more than its 5 parameters
}


def test_there_are_three_tutorials_with_their_outputs_stripped() -> None:
    assert [path.stem for path in TUTORIALS] == sorted(TINY)
    for path in TUTORIALS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(not cell.outputs and cell.execution_count is None for cell in code), path
        assert sum("parameters" in cell.metadata.get("tags", []) for cell in code) == 1, path


def _draws(source: str) -> bool:
    """Whether a cell shows a figure: a plot, a report figure or a PNG artifact."""
    return any(mark in source for mark in (".plot(", ".figures[", '.png")'))


def _with_parameters(notebook: nbformat.NotebookNode, values: str) -> None:
    index = next(
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    )
    injected = nbformat.v4.new_code_cell(values, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(index + 1, injected)


@pytest.mark.slow
@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.stem)
def test_tutorial_runs_without_error(path: Path, outputs, tmp_path) -> None:
    notebook = nbformat.read(path, as_version=4)
    _with_parameters(notebook, TINY[path.stem])
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError when a cell raises
    shown = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type in ("execute_result", "display_data")
    ]
    assert any("text/html" in output.data for output in shown)  # results render as HTML
    # a cell that draws shows an image: a figure printed as "<Figure size ...>", or not
    # shown at all, means importing satsweep switched the notebook's inline backend off
    drawing = [cell for cell in notebook.cells if cell.cell_type == "code" and _draws(cell.source)]
    for cell in drawing:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert images, f"no image shown by the cell:\n{cell.source}"
    store = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    experiments = [e.experiment_id for e in store.search_experiments()]
    assert store.search_runs(experiments), "the notebook logged nothing to this test's store"
