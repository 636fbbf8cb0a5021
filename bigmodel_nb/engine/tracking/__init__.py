"""Experiment tracking: the session's runs and logged folders in one table (`Runs`), the
`--log-dir` writer (JSON lines + TensorBoard event files, flushed as rows arrive) and the live system
sampler behind `run.system`.

    collect(log_dir="runs").table()
"""
from .logdir import RunLogger, check_writable
from .system import SystemSampler, peak
from .table import RunRecord, Runs, collect, from_run, read_folder, read_log_dir

__all__ = ["RunLogger", "RunRecord", "Runs", "SystemSampler", "check_writable", "collect", "from_run", "peak",
           "read_folder", "read_log_dir"]
