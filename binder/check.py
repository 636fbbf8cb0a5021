#!/usr/bin/env python3
"""Check the Binder set-up the way repo2docker uses it, without Docker: `make binder-check`.

1. copy the repository (git's tracked and untracked-but-not-ignored files) to a temporary folder,
   as a fresh Binder clone would see it: no .venv, no egg-info, no build outputs;
2. create a fresh virtual environment and install ``binder/requirements.txt`` alone into it (no
   constraints file, no dev extras) — an ``--extra-index-url`` whose host cannot be reached (the
   PyTorch CPU index, on machines with no network but the package registries) is dropped, saying so;
3. run ``binder/postBuild`` in the copy, with the venv's ``bin`` first on PATH, as repo2docker does;
4. check the result: ``pip check`` (the package is installed with ``--no-deps``, so a runtime
   dependency missing from the requirements shows up here), the package imported from the venv (not
   the checkout), the Python version against ``binder/runtime.txt``, the kernel spec, and the
   JupyterLab extensions that render widgets and Plotly FigureWidgets;
5. execute every tutorial ``notebooks/0*.ipynb`` headlessly in that venv, one at a time.

Any failure exits non-zero with a line naming what failed. Standard library only; run it with the
Python that should build the venv (the Makefile passes $(PYTHON)).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
# Lab extensions that must be installed and enabled so that ipywidgets and plotly's anywidget-based
# FigureWidget (the live dashboards) and plotly's static figures render in JupyterLab on Binder.
LAB_EXTENSIONS = ["@jupyter-widgets/jupyterlab-manager", "anywidget", "jupyterlab-plotly"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in `jupyter labextension list`


class CheckFailed(Exception):
    """What failed (one line), and the output that shows why (printed before that line)."""

    def __init__(self, what: str, detail: str = ""):
        super().__init__(what)
        self.detail = detail


def say(msg: str) -> None:
    print(f"binder-check: {msg}", flush=True)


def reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def filtered_requirements(src: Path, dst: Path) -> None:
    """Copy the requirements, dropping an --extra-index-url line whose host does not answer in 3 s."""
    out = []
    for line in src.read_text().splitlines():
        m = re.match(r"\s*--extra-index-url[\s=]+(\S+)", line)
        if m:
            url = urlparse(m.group(1))
            if url.scheme in ("http", "https") and url.hostname:
                port = url.port or (443 if url.scheme == "https" else 80)
                if not reachable(url.hostname, port):
                    say(f"{url.hostname} is unreachable: dropping '{line.strip()}' "
                        "(pip's configured index supplies torch here)")
                    continue
        out.append(line)
    dst.write_text("\n".join(out) + "\n")


def run(cmd, *, cwd, env, what: str, capture: bool = False, timeout: float | None = None):
    """Run a command; on failure raise CheckFailed naming `what`, with the output's tail."""
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, text=True, timeout=timeout,
                           stdout=subprocess.PIPE if capture else None,
                           stderr=subprocess.STDOUT if capture else None)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{what}: timed out after {timeout:.0f} s") from None
    if p.returncode != 0:
        tail = ""
        if capture and p.stdout:  # minus pip's notes about this machine's local index folders
            lines = [ln for ln in ANSI.sub("", p.stdout).rstrip().splitlines()
                     if not ln.startswith("WARNING: Location '")]
            tail = "\n".join(lines[-40:])
        raise CheckFailed(f"{what} (exit status {p.returncode})", tail)
    return p.stdout if capture else None


def copy_checkout(dst: Path) -> None:
    """Copy what a clone would contain (plus the not-yet-committed work) into dst."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                 cwd=ROOT, check=True, capture_output=True).stdout
        files = [f for f in listing.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:  # not a git checkout: copy the tree minus the usual build outputs
        shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
            ".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", ".pytest_cache"))
        return
    for rel in files:
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)


def check(args) -> None:
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="binder-check-"))
    try:
        repo, home = work / "repo", work / "home"
        venv = Path(args.venv).resolve() if args.venv else work / "venv"
        home.mkdir()
        copy_checkout(repo)
        req_src = Path(args.requirements).resolve() if args.requirements else repo / "binder" / "requirements.txt"
        if not req_src.is_file():
            raise CheckFailed(f"no requirements file at {req_src}")
        if args.requirements:  # what repo2docker would read in the copy is the file under test
            shutil.copy2(req_src, repo / "binder" / "requirements.txt")
        req = work / "requirements.txt"
        filtered_requirements(req_src, req)

        # A Binder user starts with no Jupyter config, kernels or IPython profile of their own.
        bindir = venv / "bin"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")}
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
                   JUPYTER_CONFIG_DIR=str(home / "jupyter-config"), JUPYTER_DATA_DIR=str(home / "jupyter-data"),
                   JUPYTER_RUNTIME_DIR=str(home / "jupyter-runtime"), IPYTHONDIR=str(home / "ipython"),
                   PIP_RETRIES=env.get("PIP_RETRIES", "2"),
                   PYTHONDONTWRITEBYTECODE="1")
        env.pop("JUPYTER_PATH", None)
        py = str(bindir / "python")

        post_build = repo / "binder" / "postBuild"
        # --venv: a venv built earlier from the very same files (CI builds it while the tests run) is reused.
        stamp = venv / ".binder-check"
        built_from = req.read_text() + (post_build.read_text() if post_build.exists() else "")
        if stamp.exists() and stamp.read_text() == built_from:
            say(f"reusing {venv}, built from the same binder/requirements.txt and postBuild")
        else:
            shutil.rmtree(venv, ignore_errors=True)
            t = time.monotonic()
            say(f"creating a fresh venv with {sys.executable} (Python {sys.version.split()[0]})")
            run([sys.executable, "-m", "venv", str(venv)], cwd=work, env=env, what="python -m venv")
            say("pip install -r binder/requirements.txt (alone)")
            run([py, "-m", "pip", "install", "--progress-bar", "off", "-r", str(req)],
                cwd=repo, env=env, capture=True, what="pip install -r binder/requirements.txt")
            say(f"  installed in {time.monotonic() - t:.0f} s")
            stamp.write_text(built_from)
        # postBuild installs bigmodel_nb from this checkout (not editable), so it runs on a reused venv too:
        # the venv's dependencies may be the same while the package has changed since it was built.
        if post_build.exists():
            say("running binder/postBuild")
            post_build.chmod(post_build.stat().st_mode | 0o111)  # repo2docker does chmod +x too
            out = run(["./binder/postBuild"], cwd=repo, env=env, capture=True, what="binder/postBuild")
            last = [ln for ln in out.splitlines() if ln.startswith("Successfully installed")]
            say(f"  postBuild: {last[-1] if last else 'done'}")
        if args.build_only:
            say(f"built {venv}; run again with --venv {venv} to check it")
            return

        out = run([py, "-m", "pip", "check"], cwd=work, env=env, capture=True,
                  what="pip check (a runtime dependency missing from binder/requirements.txt?)")
        say(f"pip check: {out.strip().splitlines()[-1] if out.strip() else 'ok'}")

        probe = ("import sys, bigmodel_nb, torch; "
                 "print(bigmodel_nb.__file__); print(torch.__version__); "
                 "print(sys.version_info[0], sys.version_info[1])")
        where, torch_version, pyver = run([py, "-c", probe], cwd=work, env=env, capture=True,
                                          what="import bigmodel_nb in the venv").strip().splitlines()[-3:]
        if not Path(where).resolve().is_relative_to(venv.resolve()):
            raise CheckFailed(f"bigmodel_nb imported from {where}, not from the venv: postBuild did not install it")
        say(f"bigmodel_nb installed in the venv; torch {torch_version}")
        if "+cu" in torch_version:
            raise CheckFailed(f"torch {torch_version} is a CUDA build; Binder needs the CPU build")
        runtime = repo / "binder" / "runtime.txt"
        if runtime.exists():
            want = runtime.read_text().strip().removeprefix("python-")
            got = pyver.replace(" ", ".")
            if want != got:
                say(f"WARNING: binder/runtime.txt asks for Python {want}; this check ran Python {got}")

        specs = json.loads(run([py, "-m", "jupyter", "kernelspec", "list", "--json"], cwd=work, env=env,
                               capture=True, what="jupyter kernelspec list"))["kernelspecs"]
        argv0 = specs.get("python3", {}).get("spec", {}).get("argv", ["?"])[0]
        resolved = argv0 if os.path.isabs(argv0) else shutil.which(argv0, path=env["PATH"])
        if not resolved or not Path(os.path.abspath(resolved)).is_relative_to(venv):  # symlinks not followed
            raise CheckFailed(f"the python3 kernel runs {argv0!r} ({resolved}), not the venv's python")

        labext = ANSI.sub("", run([py, "-m", "jupyter", "labextension", "list"], cwd=work, env=env,
                                  capture=True, what="jupyter labextension list"))
        for name in LAB_EXTENSIONS:
            line = next((ln for ln in labext.splitlines() if re.search(rf"(^|\s){re.escape(name)}\s", ln)), None)
            if line is None or "enabled" not in line or "OK" not in line:
                raise CheckFailed(f"JupyterLab extension {name} is not installed and enabled (OK) in the venv",
                                  labext.rstrip())
            say("lab extension: " + " ".join(line.split()))

        notebooks = sorted(glob.glob(str(repo / args.notebooks)))
        if not notebooks:
            raise CheckFailed(f"no notebooks match {args.notebooks}")
        outdir = work / "executed"
        times = []
        for nb in notebooks:
            rel = os.path.relpath(nb, repo)
            t = time.monotonic()
            # The kernel starts in the notebook's folder (of the copy), as on Binder.
            run([py, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--output-dir", str(outdir),
                 f"--ExecutePreprocessor.timeout={args.timeout}", "--ExecutePreprocessor.kernel_name=python3",
                 "--log-level=WARN", nb],
                cwd=Path(nb).parent, env=env, capture=True, what=f"tutorial {rel} does not run on Binder's set-up")
            times.append((rel, time.monotonic() - t))
            # Not a failure, but worth seeing: a warning printed into a cell (e.g. torch without numpy).
            warnings = [ln for cell in json.loads((outdir / Path(nb).name).read_text())["cells"]
                        for o in cell.get("outputs", [])
                        if o.get("output_type") == "stream" and o.get("name") == "stderr"
                        for ln in "".join(o["text"]).splitlines() if "warn" in ln.lower()]
            say(f"  {rel}: ok in {times[-1][1]:.0f} s"
                + (f"; {len(warnings)} warning line(s) on stderr, first: {warnings[0][:100]!r}" if warnings else ""))

        total = time.monotonic() - t_start
        say(f"OK: fresh venv from binder/requirements.txt + postBuild ran {len(notebooks)} tutorials "
            f"in {sum(s for _, s in times):.0f} s; {total:.0f} s in all")
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requirements", help="requirements file to test instead of binder/requirements.txt")
    ap.add_argument("--notebooks", default="notebooks/0*.ipynb", help="glob, relative to the repository")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (venv, executed notebooks)")
    ap.add_argument("--venv", help="build the venv here (kept), or reuse the one built here from the same files")
    ap.add_argument("--build-only", action="store_true", help="build the venv and stop (CI: while the tests run)")
    args = ap.parse_args()
    try:
        check(args)
    except CheckFailed as e:
        if e.detail:
            print(e.detail, flush=True)
        say(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
