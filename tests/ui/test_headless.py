"""Headless execution (nbconvert): text progress while it runs, and the final charts in the HTML."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


def test_nbconvert_execute_to_html_keeps_the_final_charts(tmp_path):
    shutil.copy(NOTEBOOKS / "01_quickstart.ipynb", tmp_path)
    done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--execute",
                           "--ExecutePreprocessor.timeout=300", "01_quickstart.ipynb"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    html = (tmp_path / "01_quickstart.html").read_text()
    assert re.search(r"run completed at step \d+/\d+", html)  # the text-mode summary
    charts = re.findall(r'Plotly\.newPlot\(\s*"([0-9a-f-]+)"', html)
    assert len(charts) >= 2  # the MLP's and the CNN's training curves
    assert 'src="https://cdn.plot.ly/' in html and len(html) < 2_000_000  # plotly.js linked, not embedded
    assert '"name":"train"' in html and '"name":"val"' in html
