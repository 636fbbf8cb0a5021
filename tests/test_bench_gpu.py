"""bench/gpu.py keeps working: its tiny CPU configuration runs both loops and prints the ratio."""
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "bench" / "gpu.py"


def test_gpu_benchmark_runs_its_tiny_config_on_the_cpu():
    done = subprocess.run([sys.executable, str(BENCH), "--tiny", "--steps", "5", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (re.search(r"hand-written: [\d,]+ tokens/s", done.stdout)
            and re.search(r"engine: [\d,]+ tokens/s", done.stdout))
    assert re.search(r"engine / hand-written throughput: \d\.\d{3}", done.stdout)
