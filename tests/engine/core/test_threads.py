"""engine.core.threads: each run handed to a thread gets a fresh one, in the caller's context, after the
caller's OpenMP team is released (bench/README.md: the two-OpenMP-teams slowdown)."""
import contextvars
import threading
from pathlib import Path

import pytest
import torch

from bigmodel_nb.engine.core.threads import release_openmp_team, train_in_background


def test_the_worker_runs_in_a_copy_of_the_callers_context():
    cell = contextvars.ContextVar("cell")
    cell.set("cell 7")  # ipykernel keeps the cell's parent header in a context variable like this one
    seen = []
    thread = train_in_background(lambda: seen.append((cell.get(), threading.current_thread().name)), "bigmodel_nb-t")
    thread.join(10)
    assert seen == [("cell 7", "bigmodel_nb-t")] and thread.daemon and not thread.is_alive()


def loads_libgomp() -> bool:
    maps = Path("/proc/self/maps")
    return maps.exists() and "libgomp" in maps.read_text()


@pytest.mark.skipif(not loads_libgomp(), reason="torch here does not use libgomp (e.g. macOS, Windows)")
def test_releasing_the_team_is_safe_while_another_thread_trains():
    def train():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x, y = torch.randn(64, 64, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 10
        for _ in range(30):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    expected, got = train(), []
    thread = train_in_background(lambda: got.append(train()), "bigmodel_nb-t")
    while thread.is_alive():  # this thread grows its team and lets it go, over and over, meanwhile
        assert torch.ones(1_000_000).mul_(2).sum().item() == 2_000_000
        assert release_openmp_team()
    thread.join()
    assert torch.equal(got[0], expected)
