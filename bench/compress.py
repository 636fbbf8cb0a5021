"""What `%compress` buys, measured side by side in one process on 2 CPU threads:
(a) int8 dynamic quantization of BERT-base-sized transformer blocks (random weights), torch.ao's
    quantize_dynamic against torchao (dynamic and weight-only): size of the Linear weights,
    latency, largest output difference;
(b) structured pruning (50% of the parameters) of an MLP 64-1024-1024-10 trained on digits, then
    fine-tuning: latency, parameters, test accuracy before/after;
(c) distillation on digits with `%compress --distill`'s defaults: a student with far fewer parameters
    trained against the teacher of (b) (or the tutorial's with --only distill), beside the report's
    own baseline (the same student, initial weights, batches, epochs and lr, trained alone), over seeds.
Timings alternate between variants; each gets the median and the minimum of all its timed runs
(on a busy shared machine the median also counts OpenMP threads waiting for a core): compare the
ratios of one run. Training uses --train-threads (default 1: two OpenMP threads
fighting other processes for two cores can make small-batch training 100× slower).
Run: .venv/bin/python bench/compress.py [--threads 2 --blocks 2 --rounds 5 --seeds 3] [--only distill]"""
import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bigmodel_nb.api import fit  # noqa: E402
from bigmodel_nb.engine import load_dataset  # noqa: E402
from bigmodel_nb.engine.compress import Distill, Finetune, Prune, Quantize, compress, flat_state  # noqa: E402
from bigmodel_nb.models import MLP, Block, MLPConfig  # noqa: E402


class Blocks(nn.Module):
    """BERT-base-sized encoder blocks (768 wide, 12 heads, 3072 MLP): Linear layers do the work."""

    def __init__(self, n: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(768, 12, causal=False) for _ in range(n))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def alternate(variants: dict, x, rounds: int, threads: int, repeats: int = 3) -> tuple[dict, dict]:
    """Each variant timed in turn, `rounds` times (1 warm-up + `repeats` timed runs per turn):
    the median and the minimum over all timed runs of each. On a busy machine the median also
    counts the time a descheduled OpenMP thread keeps the other waiting; the minimum does not."""
    torch.set_num_threads(threads)
    times = {name: [] for name in variants}
    with torch.no_grad():
        for _ in range(rounds):
            for name, model in variants.items():
                model(x)
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    model(x)
                    times[name].append((time.perf_counter() - t0) * 1e3)
    return ({n: statistics.median(t) for n, t in times.items()}, {n: min(t) for n, t in times.items()})


def linear_bytes(model: nn.Module, names: list[str]) -> int:
    """Bytes of the tensors (values, scales, biases) a safetensors file holds for these Linear layers."""
    tensors = flat_state(model)[0]
    return sum(t.nbytes for k, t in tensors.items() if any(k.startswith(n + ".") for n in names))


def bench_int8(args) -> None:
    torch.manual_seed(0)
    model = Blocks(args.blocks).eval()
    x = torch.randn(8, 128, 768)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    torch.set_num_threads(args.threads)
    reports = {label: compress(model, example=x, steps=[Quantize(mode, backend=backend)], latency_repeats=3)
               for label, mode, backend in (("torch.ao quantize_dynamic int8", "int8", "torch.ao"),
                                            ("torchao int8 dynamic", "int8", "torchao"),
                                            ("torchao int8 weight-only", "int8-weight", "torchao"))}
    variants = {"fp32": model, **{label: r.model for label, r in reports.items()}}
    ms, best = alternate(variants, x, args.rounds, args.threads)
    fp32_bytes = linear_bytes(model, names)
    with torch.no_grad():
        ref = model(x)
        scale = ref.abs().max().item()
        diffs = {label: (m(x) - ref).abs().max().item() for label, m in variants.items()}
    print(f"(a) int8 on {args.blocks} BERT-base-sized blocks (768/12 heads/3072, {len(names)} Linear layers, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), batch 8×128, {args.threads} threads, "
          f"{args.rounds} alternating rounds")
    print(f"    {'variant':<32}{'Linear bytes':>14}{'ratio':>8}{'file':>11}{'median':>11}{'speedup':>9}"
          f"{'min':>10}{'speedup':>9}{'max|Δ|':>9}")
    for label, m in variants.items():
        r = reports.get(label)
        lb = fp32_bytes if r is None else linear_bytes(m, names)
        size = (r.stages[1] if r is not None else next(iter(reports.values())).stages[0])["size_bytes"]
        print(f"    {label:<32}{lb / 1e6:>11.1f} MB{fp32_bytes / lb:>7.2f}×{size / 1e6:>8.1f} MB"
              f"{ms[label]:>8.1f} ms{ms['fp32'] / ms[label]:>8.2f}×"
              f"{best[label]:>7.1f} ms{best['fp32'] / best[label]:>8.2f}×"
              f"{diffs[label]:>9.4f}")
    print(f"    (largest |output| {scale:.2f}; ratio and speedup relative to fp32; targets: Linear ≥ 3.5× smaller, "
          f"≥ 1.5× faster)")


def bench_prune(args, data):
    torch.set_num_threads(args.train_threads)
    torch.manual_seed(0)
    teacher = MLP(MLPConfig(64, (1024, 1024), 10))
    t0 = time.perf_counter()
    fit(teacher, data, epochs=args.epochs, seed=0, lr=1e-3)
    train_s = time.perf_counter() - t0
    report = compress(teacher, data, steps=[Prune(0.5, structured=True), Finetune(2)], seed=0, lr=1e-3,
                      latency_batch=args.batch, latency_repeats=3)
    x = data.test.tensors()[0][: args.batch]
    pruned = report.model
    ms, best = alternate({"original": teacher.eval(), "pruned + finetuned": pruned}, x, args.rounds, args.threads,
                         repeats=10)
    orig, after_prune, tuned = report.stages
    print(f"\n(b) structured pruning, MLP 64-1024-1024-10 trained {args.epochs} epochs on digits ({train_s:.0f} s), "
          f"latency batch {args.batch}, {args.threads} threads")
    for r in report.stages:
        print(f"    {r['stage']:<30} params {r['params']:>9,}  size {r['size_bytes'] / 1e6:6.2f} MB  "
              f"test accuracy {r['accuracy']:.2%}")
    a, b = "original", "pruned + finetuned"
    print(f"    params ratio {orig['params'] / tuned['params']:.2f}× fewer; latency (alternating) median {ms[a]:.2f} → "
          f"{ms[b]:.2f} ms = {ms[a] / ms[b]:.2f}× faster, min {best[a]:.2f} → {best[b]:.2f} ms = "
          f"{best[a] / best[b]:.2f}× faster (target ≥ 1.4×)")
    print(f"    accuracy original {orig['accuracy']:.2%} → pruned {after_prune['accuracy']:.2%} → finetuned "
          f"{tuned['accuracy']:.2%}: {100 * (tuned['accuracy'] - orig['accuracy']):+.2f} points (target within 2)")
    print(f"    {after_prune['note']}")
    return teacher, orig["accuracy"]


def bench_distill(args, data, teacher, teacher_acc) -> None:
    """`%compress --distill` with its defaults (or --lr/--distill-epochs): the report's own baseline
    row (the same student, initial weights, batches, epochs and lr, trained alone) beside the distilled one."""
    torch.set_num_threads(args.train_threads)
    hidden = (args.student,)
    teacher_params = sum(p.numel() for p in teacher.parameters())
    alone, distilled, verdicts = [], [], []
    for seed in range(args.seeds):
        torch.manual_seed(100 + seed)
        student = MLP(MLPConfig(64, hidden, 10))
        report = compress(teacher, data, steps=[Distill(student, epochs=args.distill_epochs)], seed=seed,
                          lr=args.lr, latency_repeats=1)
        distilled.append(report.stages[-1]["accuracy"])
        alone.append(report.baseline["accuracy"])
        verdicts.append(report.notes[0])
    run = next(iter(report.runs.values()))
    student_params = sum(p.numel() for p in student.parameters())
    ma, md = statistics.mean(alone), statistics.mean(distilled)
    wins = sum(d > a for d, a in zip(distilled, alone))
    ties = sum(d == a for d, a in zip(distilled, alone))
    print(f"\n(c) distillation on digits: teacher {teacher_params:,} params ({teacher_acc:.2%}), student MLP 64-"
          f"{args.student}-10 {student_params:,} params ({teacher_params / student_params:.0f}× fewer), "
          f"{run.config.epochs} epochs, lr {run.config.lr:g}, T=4, α=0.5 (the defaults unless given), seeds "
          f"{args.seeds}")
    print("    student alone     " + "  ".join(f"{v:.2%}" for v in alone) + f"   mean {ma:.2%}")
    print("    student distilled " + "  ".join(f"{v:.2%}" for v in distilled) + f"   mean {md:.2%}")
    print(f"    distilled won {wins}, tied {ties}, lost {args.seeds - wins - ties}; distilled − teacher "
          f"{100 * (md - teacher_acc):+.2f} points; distilled − alone {100 * (md - ma):+.2f} points (target ≥ 0; "
          f"one test sample is {100 / len(data.test):.2f} points)")
    print(f"    last report: {verdicts[-1]}")


def tutorial_teacher(data):
    """The teacher of notebooks/05_compression.ipynb: MLP 64-512-512-10, 8 epochs at lr 1e-3, seed 0."""
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    run = fit(teacher, data, epochs=8, seed=0, lr=1e-3)
    return teacher.eval(), run.evaluate("test")["accuracy"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--student", type=int, default=16)
    parser.add_argument("--distill-epochs", type=int, default=None, help="default: the engine's (10)")
    parser.add_argument("--lr", type=float, default=None, help="distillation lr; default: the engine's (3e-2)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", choices=["all", "int8", "prune", "distill"], default="all",
                        help="one part; distill alone uses the tutorial's teacher (64-512-512-10)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(f"torch {torch.__version__}, timings on {args.threads} threads (training on {args.train_threads}), "
          f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}")
    if args.only in ("all", "int8"):
        bench_int8(args)
    data = load_dataset("digits")
    if args.only in ("all", "prune"):
        teacher, acc = bench_prune(args, data)
    if args.only == "distill":
        torch.set_num_threads(args.train_threads)
        teacher, acc = tutorial_teacher(data)
    if args.only in ("all", "distill"):
        bench_distill(args, data, teacher, acc)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
