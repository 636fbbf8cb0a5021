"""GPT training throughput: the engine (`Run`) against the hand-written nanoGPT-style loop, same
model, same synthetic tokens, same process, alternating.

    .venv/bin/python bench/gpu.py                 # GPT-2 small (124M) on a GPU: bf16 + SDPA + compile + fused AdamW
    .venv/bin/python bench/gpu.py --tiny          # a small config on the CPU (CI runs this)

Prints tokens/s, MFU (on a GPU in flops.PEAK_FLOPS), peak memory, and engine/hand-written ratios.
Targets on one H100: MFU ≥ 40 %, engine within 3 % of the hand-written loop.
"""
import argparse
import gc
import math
import time

import torch

from bigmodel_nb.engine import Run, TrainConfig
from bigmodel_nb.engine.core.callbacks import Callback
from bigmodel_nb.engine.data import as_bundle
from bigmodel_nb.engine.scale import flops
from bigmodel_nb.models import GPT, GPTConfig


def tokens(n: int, block: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, vocab, (n, block + 1), generator=g)
    return data[:, :-1].contiguous(), data[:, 1:].contiguous()


def hand_written(model, x, y, steps: int, batch: int, device, dtype, compile_: bool) -> float:
    """nanoGPT's loop: fused AdamW, autocast, one optimizer step per batch. Returns seconds for `steps`."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    fwd = torch.compile(model) if compile_ else model
    ctx = torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)
    for i in range(steps + 2):  # two warm-up steps (compilation) are not timed
        if i == 2:
            sync(device)
            t0 = time.perf_counter()
        j = (i * batch) % (len(x) - batch + 1)
        xb, yb = x[j:j + batch].to(device, non_blocking=True), y[j:j + batch].to(device, non_blocking=True)
        with ctx:
            _, loss = fwd(xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - t0


def engine(model, x, y, steps: int, batch: int, device, amp: str, compile_: bool) -> float:
    data = as_bundle({"train": (x, y)}, task="language-model")
    config = TrainConfig(steps=steps + 2, batch_size=batch, optimizer="adamw", lr=3e-4, amp=amp, device=str(device),
                         compile=compile_, log_every=max(10, steps), seed=0)
    run, t = Run(model, data, config), {}

    class StartAfterWarmup(Callback):
        def on_step_end(self, run, logs):
            if logs["step"] == 2:  # the first two steps (compilation) are not timed
                sync(device)
                t["start"] = time.perf_counter()

    run.run_here([StartAfterWarmup()])
    sync(device)
    assert run.status == "completed", run.error
    return time.perf_counter() - t["start"]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="a small GPT on the CPU (for CI)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        cfg, batch, steps, amp, dtype, compile_ = GPTConfig(block_size=64, vocab_size=96, n_layer=2, n_head=4,
                                                             n_embd=64), 16, args.steps or 20, "off", None, False
    else:
        cfg = GPTConfig(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=False)
        batch, steps, amp, dtype, compile_ = 16, args.steps or 50, "bf16", torch.bfloat16, True
    # Enough sequences that no timed step crosses an epoch boundary: the engine's epoch bookkeeping (a
    # validation-free epoch end, a shuffle order) would otherwise be timed and the hand-written loop's not.
    x, y = tokens(batch * (steps + 2), cfg.block_size, cfg.vocab_size)
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'} · "
          f"{sum(p.numel() for p in GPT(cfg).parameters()) / 1e6:.1f}M params · "
          f"batch {batch} × {cfg.block_size} tokens · "
          f"{steps} timed steps · amp {amp} · compile {compile_}")
    results = {"hand-written": [], "engine": []}
    for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both alike
        for name in results:
            gc.collect()  # the last run's model, optimizer and compiled graphs go before this one is measured
            torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            torch.manual_seed(0)
            model = GPT(cfg).to(device)
            seconds = (hand_written(model, x, y, steps, batch, device, dtype, compile_) if name == "hand-written"
                       else engine(model, x, y, steps, batch, device, amp, compile_))
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
            results[name].append((steps * batch * cfg.block_size / seconds, peak))
    model = GPT(cfg)
    for name, runs in results.items():
        tps, peak = max(runs)  # the fastest repeat, and its peak memory
        util = flops.mfu(model, tps, cfg.block_size, device)
        print(f"{name:>13}: {tps:,.0f} tokens/s · MFU {'n/a (CPU or unknown GPU)' if util is None else f'{util:.1%}'}"
              f" · peak memory {peak:.2f} GiB")
    ratio = max(r[0] for r in results["engine"]) / max(r[0] for r in results["hand-written"])
    print(f"engine / hand-written throughput: {ratio:.3f} (target ≥ 0.97)")


if __name__ == "__main__":
    main()
