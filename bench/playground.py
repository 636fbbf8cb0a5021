"""How live the optimizer playground is: one redraw (every path recomputed with torch.optim, the figure updated
in one batch, the table rewritten) for 4 optimizers × 300 steps, measured in one process next to the
hand-written loop that computes the same paths one optimizer at a time (what the engine did before, and what
a student writes), and next to rebuilding the static `%compare_optimizers --function` figure (re-running the cell).

Also: the messages one change sends to the browser, and how many redraws a 1-second drag (a slider event every
10 ms, on the kernel's event loop) costs through the throttle.
Run: .venv/bin/python bench/playground.py [--repeats 15] [--function rosenbrock|beale|rastrigin|saddle|quadratic|custom]
"""
import argparse
import asyncio
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ["BIGMODEL_NB_UI"] = "widget"
from bigmodel_nb.engine.compare.landscapes import FUNCTIONS, custom_function, trajectories  # noqa: E402
from bigmodel_nb.engine.compare.playground import Playground  # noqa: E402
from bigmodel_nb.ui.display import figure_widget  # noqa: E402
from bigmodel_nb.ui.landscape import trajectory_figure  # noqa: E402
from bigmodel_nb.ui.playground import PlaygroundView, Throttle, playground_figure  # noqa: E402

NAMES = ("sgd", "momentum", "rmsprop", "adam")
TORCH = {"sgd": (torch.optim.SGD, {}), "momentum": (torch.optim.SGD, {"momentum": 0.9}),
         "rmsprop": (torch.optim.RMSprop, {}), "adam": (torch.optim.Adam, {})}


def hand(function: str, steps: int) -> None:
    """Each optimizer alone: zero_grad, f(p).backward(), step, as in the torch.optim docs."""
    fn = FUNCTIONS[function]
    for name in NAMES:
        cls, fixed = TORCH[name]
        p = torch.nn.Parameter(torch.tensor(fn.start, dtype=torch.float64))
        opt = cls([p], lr=fn.lrs[name], **fixed)
        for _ in range(steps):
            opt.zero_grad()
            fn.f(p).backward()
            opt.step()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--function", default="rosenbrock", choices=[*FUNCTIONS, "custom"],
                        help="custom: Rosenbrock given as your own f(x, y), so its gradient comes from autograd")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what a notebook's small ops use anyway; keeps the figures steady

    rosen = FUNCTIONS["rosenbrock"]
    function = (custom_function(lambda x, y: rosen.f(torch.stack([x, y])), bounds=rosen.bounds, start=rosen.start)
                if args.function == "custom" else args.function)
    if args.function == "custom":
        FUNCTIONS["custom"] = rosen  # the hand loop runs the same f (autograd there too)
    pg = Playground(function, NAMES, steps=args.steps, lr={n: rosen.lrs[n] for n in NAMES}
                    if args.function == "custom" else None)
    view = PlaygroundView(pg)
    view.fig = figure_widget(playground_figure(pg))
    view._build()
    sent = []
    send = view.fig._send_update_msg
    view.fig._send_update_msg = lambda *a, **k: (sent.append(a), send(*a, **k))
    lr = view.lr["sgd"]
    changes, lr0 = [0], lr.value

    def redraw():  # what one slider change does
        changes[0] += 1
        lr.value = lr0 * (1.2 if changes[0] % 2 else 1.0)

    variants = {"playground redraw": redraw, "engine paths only": lambda: pg.update(),
                "hand loop, one optimizer at a time": lambda: hand(args.function, args.steps),
                "static figure (re-run the cell)": lambda: trajectory_figure(
                    trajectories(pg.function, NAMES, steps=args.steps, lr=pg.settings.lrs))}
    for fn in variants.values():  # warm-up: imports, first plotly validation, torch's lazy init
        fn()
    times = {k: [] for k in variants}
    for _ in range(args.repeats):  # alternating, so a noisy neighbour hits every variant alike
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)

    sent.clear()
    redraw()
    messages = len(sent)

    async def drag():
        """The view's own throttle on a running event loop, as in the kernel. Slider events are due every 10 ms
        of wall time; those that fell due while a redraw ran are read back to back, as the kernel reads its
        queued comm messages."""
        view.request = Throttle(view.redraw, loop=asyncio.get_running_loop)  # the kernel's loop, stood in for
        before, start, sent_events = view.redraws, time.perf_counter(), 0
        while sent_events < 100:
            due = min(100, int((time.perf_counter() - start) / 0.01) + 1)
            for i in range(sent_events, due):
                lr.value = lr0 * (1 + i / 100)
            sent_events = due
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.5)
        return view.redraws - before, pg.settings.lrs["sgd"]

    redraws, final_lr = asyncio.run(drag())

    print(f"optimizer playground, {args.function}, {len(NAMES)} optimizers × {args.steps} steps, "
          f"{args.repeats} alternating repeats, torch {torch.__version__}, {os.cpu_count()} CPUs")
    base = statistics.median(times["playground redraw"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:38s} median {med * 1e3:7.1f} ms   min {min(ts) * 1e3:7.1f} ms   "
              f"{med / base:5.2f}× the redraw")
    print(f"  target: redraw < 100 ms -> {'met' if base < 0.1 else 'NOT met'} (median {base * 1e3:.1f} ms)")
    print(f"  figure messages per change: {messages}")
    print(f"  a 1 s drag (100 slider events): {redraws} redraws through the {Throttle(None).interval * 1e3:.0f} ms "
          f"throttle, the last at the last value ({final_lr:.4g} = {lr.value:.4g})")


if __name__ == "__main__":
    main()
