"""Real-browser harness: a throw-away JupyterLab server driven by headless Chromium.

Fixtures
--------
``jupyter_server`` (session)
    A ``jupyter lab`` started from the running Python environment on
    127.0.0.1, a free port and a random token.  Config, data, runtime, settings
    and workspace dirs live in a temp dir; the environment's ``share/jupyter``
    stays on the data path, so the prebuilt lab extensions (widgets, plotly,
    anywidget) and the kernelspec are found.  Yields a :class:`JupyterServer`.
``browser`` (session)
    Playwright (sync API) Chromium using the system ``chromium`` binary.
``lab_page`` (function)
    A :class:`LabPage`: ``open("x.ipynb")`` copies a notebook into the server
    root, opens it in a fresh browser context and waits for an idle kernel;
    ``run_all()``, ``screenshot(name)``, ``errors`` (page errors).

Everything in this folder is marked ``browser``; select or skip it with
``-m browser`` / ``-m "not browser"``.  Without Chromium or Playwright the
tests are skipped, except with ``CI=true`` where that is an error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

HERE = Path(__file__).parent
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# Lab settings applied to every server: no news/update pop-ups over the page.
DEFAULT_LAB_SETTINGS = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}
SERVER_START_TIMEOUT = 90.0
KERNEL_IDLE_TIMEOUT = 90.0

_screenshots: list[Path] = []


# ----------------------------------------------------------------------------
# pytest hooks
# ----------------------------------------------------------------------------
def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: real-browser test (JupyterLab server + headless Chromium)"
    )


def pytest_collection_modifyitems(config, items):
    # This hook sees every collected item: mark only the ones in this folder.
    for item in items:
        try:
            Path(str(item.path)).relative_to(HERE)
        except ValueError:
            continue
        item.add_marker(pytest.mark.browser)


def pytest_terminal_summary(terminalreporter):
    if _screenshots:
        terminalreporter.write_sep("-", "browser screenshots")
        terminalreporter.write_line(f"{len(_screenshots)} screenshot(s) in {screenshot_dir()}")


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _unavailable(reason: str):
    """Skip, or fail loudly on CI, when the browser stack is missing."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"browser tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot_dir() -> Path:
    return Path(os.environ.get("BIGMODEL_NB_SCREENSHOTS") or "screenshots").resolve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """A ``jupyter lab`` process owned by the test session."""

    def __init__(self, base: Path, lab_settings: dict | None = None, extra_args=(),
                 app: str = "lab", extra_env: dict | None = None):
        if app not in ("lab", "notebook"):
            raise ValueError(f"app must be 'lab' or 'notebook', not {app!r}")
        self.app = app
        self.base = Path(base)
        self.root_dir = self.base / "root"
        self.port = _free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = self.base / "server.log"
        self.settings_dir = self.base / "lab-settings"
        self.proc: subprocess.Popen | None = None
        self._extra_args = list(extra_args)
        self._extra_env = dict(extra_env or {})
        self._lab_settings = {**DEFAULT_LAB_SETTINGS, **(lab_settings or {})}

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> JupyterServer:
        for d in ("root", "config", "data", "runtime", "lab-settings", "workspaces"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        for plugin, values in self._lab_settings.items():
            self.set_lab_setting(plugin, values)
        env = dict(os.environ)
        env_share = str(Path(sys.prefix) / "share" / "jupyter")
        env.update(
            JUPYTER_CONFIG_DIR=str(self.base / "config"),
            JUPYTER_DATA_DIR=str(self.base / "data"),
            JUPYTER_RUNTIME_DIR=str(self.base / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(self.settings_dir),
            JUPYTERLAB_WORKSPACES_DIR=str(self.base / "workspaces"),
            # keep the environment's lab extensions and kernelspec on the path
            JUPYTER_PATH=os.pathsep.join(
                p for p in (env_share, os.environ.get("JUPYTER_PATH", "")) if p
            ),
            # the kernelspec says "python": make it this environment's python
            PATH=os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", ""))),
            JUPYTER_PLATFORM_DIRS="1",
            PYTHONUNBUFFERED="1",
        )
        env.pop("JUPYTER_PREFER_ENV_PATH", None)
        env.update(self._extra_env)
        app_cls = "LabApp" if self.app == "lab" else "JupyterNotebookApp"
        cmd = [
            sys.executable, "-m", "jupyterlab" if self.app == "lab" else "notebook",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--{app_cls}.expose_app_in_browser=True",
            *self._extra_args,
        ]
        if self.app == "lab":
            cmd += [
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=self.root_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: server + its kernels
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "api/status", timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"jupyter lab did not answer in {SERVER_START_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self):
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                # SIGTERM lets the server shut its kernels down; then make sure.
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # leftovers of our own group only
                except ProcessLookupError:
                    pass
                proc.wait(5)
        except ProcessLookupError:
            pass
        finally:
            log = getattr(self, "_log", None)
            if log is not None and not log.closed:
                log.close()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # -- REST ----------------------------------------------------------------
    def api(self, method: str, path: str, body=None, timeout: float = 10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path.lstrip("/"), data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def shutdown_kernels(self):
        for s in self.api("GET", "api/sessions") or []:
            try:
                self.api("DELETE", f"api/sessions/{s['id']}")
            except urllib.error.HTTPError:
                pass
        for k in self.api("GET", "api/kernels") or []:
            try:
                self.api("DELETE", f"api/kernels/{k['id']}")
            except urllib.error.HTTPError:
                pass

    def set_lab_setting(self, plugin_id: str, values: dict):
        """Write user settings, e.g. ("@jupyterlab/apputils-extension:kernels-settings",
        {"commsOverSubshells": "perComm"}).  Takes effect on the next page load."""
        pkg, _, plugin = plugin_id.partition(":")
        path = self.settings_dir / pkg / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values, indent=2))

    def lab_url(self, nb_path: str) -> str:
        """URL that opens a notebook (``?reset`` drops stale lab tabs)."""
        if self.app == "notebook":
            return f"{self.url}notebooks/{nb_path}?token={self.token}"
        return f"{self.url}lab/tree/{nb_path}?reset&token={self.token}"


class LabPage:
    """One notebook opened in JupyterLab in its own browser context."""

    def __init__(self, server: JupyterServer, browser, name: str = "page"):
        self.server = server
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.name = name
        self.errors: list[str] = []
        self.console: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on(
            "console",
            lambda m: self.console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
        )
        self.nb_path: str | None = None

    def open(self, notebook, dest: str | None = None, timeout: float = KERNEL_IDLE_TIMEOUT):
        """Copy ``notebook`` (a path, an nbformat dict, or a list of code-cell sources) into the
        server root and open it; returns when the kernel is idle. ``open(None, dest)`` reopens a
        notebook that is already there, as saved."""
        if notebook is None:  # reopen a notebook already in the server root (e.g. one a test saved)
            dest = dest or self.nb_path
        elif isinstance(notebook, (list, tuple, dict)):
            if not isinstance(notebook, dict):
                notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in notebook], metadata={
                    "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}})
            dest = dest or "notebook.ipynb"
            (self.server.root_dir / dest).write_text(json.dumps(notebook))
        else:
            src = Path(notebook)
            dest = dest or src.name
            shutil.copy(src, self.server.root_dir / dest)
        self.nb_path = dest
        self.page.goto(self.server.lab_url(dest), timeout=timeout * 1000)
        self.page.wait_for_function(
            """(path) => {
                const app = window.jupyterapp;
                const w = app && app.shell && app.shell.currentWidget;
                if (!w || !w.context || w.context.path !== path || !w.content) return false;
                const sc = w.context.sessionContext;
                const k = sc && sc.session && sc.session.kernel;
                return !!(sc.isReady && k && k.status === 'idle');
            }""",
            arg=dest,
            timeout=timeout * 1000,
        )
        return self

    def evaluate(self, js: str, arg=None):
        return self.page.evaluate(js, arg)

    def kernel_id(self) -> str:
        return self.page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.context.sessionContext.session.kernel.id"
        )

    def kernel_status(self) -> str:
        return self.page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.context.sessionContext.session.kernel.status"
        )

    def run_all(self):
        """Start 'Run All' without waiting for it (cells may run for long)."""
        self.page.evaluate(
            "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }"
        )

    def wait_status(self, status: str, timeout: float = 30.0):
        """Wait until the newest dashboard's status (its `data-status`) is `status`."""
        self.page.wait_for_function(
            "(s) => { const els = [...document.querySelectorAll('[data-status]')]; "
            "return els.length && els[els.length - 1].dataset.status === s; }", arg=status, timeout=timeout * 1000)

    def wait_training(self, timeout: float = 90.0):
        """Wait until the first chart's first trace has a few points (a run is training)."""
        self.page.wait_for_function("""() => { const p = document.querySelector('.js-plotly-plot');
            return p && p.data && p.data[0] && p.data[0].x && p.data[0].x.length > 2; }""", timeout=timeout * 1000)

    def wait_idle(self, timeout: float = 120.0):
        """Wait until every cell ran (no '[*]' prompt) and the kernel is idle."""
        self.page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w.context.sessionContext.session.kernel;
                const busy = [...document.querySelectorAll('.jp-InputArea-prompt')]
                    .some(p => p.textContent.includes('*'));
                return k.status === 'idle' && !busy;
            }""",
            timeout=timeout * 1000,
        )

    def cell_outputs(self) -> list[str]:
        """Text of every cell's output area, in order."""
        return self.page.evaluate(
            """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')]
                    .map(c => (c.querySelector('.jp-OutputArea') || {}).innerText || '')"""
        )

    def screenshot(self, name: str) -> Path:
        out = screenshot_dir()
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        _screenshots.append(path)
        return path

    def close(self):
        self.context.close()


# ----------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------
def _serve(app: str, package: str, what: str):
    """A server of `app` ("lab" or "notebook") in a temp dir for the session, removed afterwards."""
    try:
        __import__(package)
    except ImportError:
        _unavailable(f"{what} is not installed in this environment")
    base = Path(tempfile.mkdtemp(prefix=f"bigmodel-nb-{app}-"))
    server = JupyterServer(base, app=app)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def jupyter_server():
    yield from _serve("lab", "jupyterlab", "jupyterlab")


@pytest.fixture(scope="session")
def notebook7_server():
    """A Notebook 7 server (``jupyter notebook``), like ``jupyter_server``."""
    yield from _serve("notebook", "notebook", "Notebook 7 (the `notebook` package)")


@pytest.fixture
def new_page(browser):
    """A factory of further pages: ``new_page(server, name)`` -> LabPage, closed after the test."""
    pages = []

    def make(server, name="page"):
        pages.append(LabPage(server, browser, name=name))
        return pages[-1]

    yield make
    for page in pages:
        page.close()
        page.server.shutdown_kernels()


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright (Python) is not installed")
    exe = find_chromium()
    if exe is None:
        _unavailable("no chromium binary on PATH (Debian: apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def lab_page(browser, jupyter_server, request):
    lp = LabPage(jupyter_server, browser, name=request.node.name)
    try:
        yield lp
    finally:
        if getattr(request.node, "rep_call_failed", False):
            try:
                lp.screenshot(f"FAILED-{request.node.name}")
            except Exception:
                pass
        lp.close()
        try:
            jupyter_server.shutdown_kernels()
        except Exception:
            pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call_failed = rep.failed
