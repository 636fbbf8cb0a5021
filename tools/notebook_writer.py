"""Shared by the make_*.py scripts: execute a tutorial's cells headless and write the notebook,
so the outputs stored in notebooks/ are real."""
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell


def execute_and_write(cells: list, filename: str, cleanup: tuple[str, ...] = ()) -> Path:
    """Run `cells` in a fresh python3 kernel from notebooks/, then write notebooks/<filename>.
    `cleanup` names files the notebook writes that should not stay in the repository."""
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    started = time.perf_counter()
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    for name in cleanup:
        (NOTEBOOKS / name).unlink(missing_ok=True)
    out = NOTEBOOKS / filename
    nbformat.write(nb, out)
    print(f"wrote {out} (executed in {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return out
