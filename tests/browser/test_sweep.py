"""`%%sweep` in a real JupyterLab: the running trial's dashboard shows its curves, and its Stop button ends
the whole sweep after the running step, keeping the finished trials and the study."""
import time

import pytest

CELL = "model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))"


def test_stop_on_the_running_trial_ends_the_sweep(lab_page):
    # --epochs 1..400: short trials finish, and one long enough (≥ 100 epochs) is stopped mid-way.
    cells = ["%load_ext bigmodel_nb", "import torch\nfrom torch import nn",
             f"%%sweep --trials 50 --seed 0 --prune none --data digits --epochs 1..400 --lr 1e-3 --hidden 16,32\n"
             f"{CELL}",
             "print('after', sweep.status, len(sweep.trials), [t['state'] for t in sweep.trials][-1])"]
    lab_page.open(cells, dest="sweep_stop.ipynb")
    lab_page.run_all()
    page = lab_page.page
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # a trial long enough to press Stop on
        lab_page.wait_training()
        status = page.evaluate("() => (document.querySelector('.bmnb-sweep-status') || {}).textContent || ''")
        steps = page.evaluate("() => { const s = [...document.querySelectorAll('[data-status]')].pop(); "
                              "return s ? +s.dataset.step : 0; }")
        total = page.evaluate("() => { const t = (document.querySelector('.bmnb-info') || {}).textContent || '';"
                              "const m = t.match(/step \\d+\\/(\\d+)/); return m ? +m[1] : 0; }")
        if total >= 2000 and 5 < steps < total // 2:  # the click lands well before this trial ends
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no trial of ≥ 2000 steps was training within 120 s (last: {status!r})")
    lab_page.screenshot("sweep-running")
    assert "sweep" in status
    page.locator("button.bmnb-stop").first.click()
    lab_page.wait_status("stopped", timeout=30)
    lab_page.wait_idle(timeout=60)
    out, deadline = "", time.monotonic() + 30
    while not out and time.monotonic() < deadline:  # the last cell runs once the sweep has ended
        out = lab_page.cell_outputs()[3]
        time.sleep(0.2)
    assert out.startswith("after stopped") and out.rstrip().endswith(" stopped"), out  # the stopped trial
    finished = int(out.split()[2])
    assert finished < 50
    lab_page.screenshot("sweep-stopped")
    assert page.locator(".bmnb-sweep").count() == 1  # the trials table of the stopped sweep
    assert not lab_page.errors
