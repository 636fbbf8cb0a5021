"""Writes notebooks/05_compression.ipynb (the source of truth for its cells), then executes it
headless so the stored outputs are real. Run: .venv/bin/python tools/make_compression_nb.py"""
from notebook_writer import code, execute_and_write, md

cells = [
    md(r"""# Compression: pruning, quantization and distillation, honestly measured

A trained model can often be made smaller or faster at little cost in accuracy. This tutorial:

1. writes **magnitude pruning**, **int8 quantization** and a **distillation step** by hand, the
   correct way, next to the mistakes in the code of the written material this course started from;
2. uses `%compress` to prune a digits classifier **unstructured** (weights set to zero) and
   **structured** (neurons removed), and shows why only the second one is faster, and when a sparse
   format is really smaller;
3. **quantizes** it: int8 dynamic, int8 weight-only, float16 and bfloat16;
4. **distills** it into a much smaller student, and compares that student with the same student
   trained alone on the same budget;
5. reads the report: which gains are real, which are only simulated, and which timings to trust."""),
    code("%load_ext bigmodel_nb"),
    md(r"""Timings on a shared machine need care. With two threads, every matrix product waits for both;
when another process holds one of the cores, the product waits for its next time slice (a few
milliseconds), and a 0.3 ms forward pass is timed at 20 ms or more — in bursts, for the multi-threaded
large model and not for a tiny one. This tutorial times everything on **one thread**, and `%compress`
says in a stage's note when its timings were still disturbed."""),
    code("""import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)"""),
    md(r"""## 1. Pruning, quantization and distillation by hand — and what the sources got wrong

**Magnitude pruning** keeps the weights with the largest $|w|$ and sets the rest to zero: a mask
$m = [\,|w| > \tau\,]$ with the threshold $\tau$ chosen so that a fraction $r$ is removed, and
$w \leftarrow w \odot m$.

The sources' pruning code builds a mask of ones and then applies the threshold to **the mask
itself** instead of to $|w|$. Every entry of a mask of ones (1.0) exceeds a magnitude threshold
(here about 0.06), so the code zeroes *every* weight: it does not "keep everything", it **erases
the layer**. The cell below runs both and checks what each does."""),
    code("""torch.manual_seed(0)
layer = nn.Linear(64, 32)
w = layer.weight.detach().clone()

def prune_by_magnitude(w, ratio):                    # correct: the mask comes from |w|
    threshold = w.abs().flatten().kthvalue(int(ratio * w.numel())).values
    return w * (w.abs() > threshold)

def prune_as_in_the_sources(w, ratio):               # the sources' logic: the threshold is applied to the mask
    threshold = w.abs().flatten().kthvalue(int(ratio * w.numel())).values
    mask = torch.ones_like(w)
    mask[mask > threshold] = 0                        # 1.0 > threshold everywhere: every entry is zeroed
    return w * mask

pruned, erased = prune_by_magnitude(w, 0.5), prune_as_in_the_sources(w, 0.5)
print(f"correct pruning: {(pruned == 0).float().mean():.0%} zeros; the sources' version: "
      f"{(erased == 0).float().mean():.0%} zeros")
assert abs((pruned == 0).float().mean() - 0.5) < 0.01
assert (erased == 0).all(), "the sources' mask code erases the layer\""""),
    md(r"""**Symmetric per-tensor int8 quantization** stores $q = \mathrm{clamp}(\mathrm{round}(w/s), -127, 127)$
with one scale $s = \max|w| / 127$, and computes with $\hat w = s\,q$; rounding to the nearest step
makes the error at most $s/2$ per weight.

The sources' version is `param = round(param * (1 << b) - 1) / (1 << b)` in a loop over the
parameters. Three things are wrong with the formula — **no scale** (the step is $2^{-b}$ whatever the
weights' range), **no clamp** (a weight above 0.5 gives a code outside $[-128, 127]$, so it is not 8
bits), and an **off-by-one** (the `- 1` shifts every weight down by $2^{-b}$) — and one with the
code: `param = ...` rebinds a **local variable**, so the model never changes."""),
    code("""torch.manual_seed(0)
model_src = nn.Linear(64, 32)
before = model_src.weight.detach().clone()
b = 8
for param in model_src.parameters():                 # the sources' loop
    param = torch.round(param * (1 << b) - 1) / (1 << b)
assert torch.equal(model_src.weight, before), "the loop rebinds a local name: the model is unchanged"
print("after the sources' loop the model is unchanged:", torch.equal(model_src.weight, before))

wide = 6 * before                                    # weights up to ±0.75: not unusual
codes = torch.round(wide * (1 << b) - 1)
source = codes / (1 << b)
print(f"the formula itself: codes from {codes.min():.0f} to {codes.max():.0f} (int8 holds -128..127), "
      f"mean shift {(source - wide).mean():+.5f} ≈ -1/2^{b} = {-1 / (1 << b):+.5f}")
assert codes.max() > 127 and abs((source - wide).mean() + 1 / (1 << b)) < 1e-3

def quantize_int8(w):                                # symmetric, per tensor
    scale = w.abs().max() / 127
    q = torch.clamp(torch.round(w / scale), -127, 127).to(torch.int8)
    return q, scale

q, scale = quantize_int8(wide)
error = (q.float() * scale - wide).abs().max()
print(f"int8: {q.numel()} bytes instead of {wide.numel() * 4} (+1 scale), codes {q.min()}..{q.max()}, "
      f"max error {error:.5f} ≤ s/2 = {scale / 2:.5f}")
assert error <= scale / 2 + 1e-7 and q.abs().max() <= 127

with torch.no_grad():                                # writing the result back is what changes the model
    codes, s = quantize_int8(model_src.weight)
    model_src.weight.copy_(codes.float() * s)
assert not torch.equal(model_src.weight, before)"""),
    md(r"""The sources' **distillation** code has four mistakes: it never uses the teacher's output (the
student learns from the labels only, so nothing is distilled); it hands the **teacher's** parameters
to the optimizer; it never calls `zero_grad`, so gradients pile up from step to step; and its
teacher is the pruned model of the code above — an erased network, whose outputs no longer depend on
the input at all. One correct step, which is what `%compress --distill` does in every step (the
teacher in eval mode under `no_grad`, only the student's parameters in the optimizer):"""),
    code("""torch.manual_seed(0)
teacher_demo = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
student_demo = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
optimizer = torch.optim.Adam(student_demo.parameters(), lr=1e-2)   # the student's parameters only
x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
T, alpha = 4.0, 0.5
frozen = [p.clone() for p in teacher_demo.parameters()]

optimizer.zero_grad()                                # gradients of this step only
with torch.no_grad():
    z_t = teacher_demo(x)                            # the teacher's output is used, and never trained
z_s = student_demo(x)
loss = (alpha * T**2 * F.kl_div(F.log_softmax(z_s / T, -1), F.softmax(z_t / T, -1), reduction="batchmean")
        + (1 - alpha) * F.cross_entropy(z_s, y))
loss.backward()
optimizer.step()
assert all(torch.equal(p, f) and p.grad is None for p, f in zip(teacher_demo.parameters(), frozen))

erased_teacher = nn.Linear(64, 10)
with torch.no_grad():
    erased_teacher.weight.copy_(prune_as_in_the_sources(erased_teacher.weight, 0.5))
out = erased_teacher(x)
print("an erased teacher gives every input the same output:", torch.allclose(out, out[0].expand_as(out)))
assert torch.allclose(out, out[0].expand_as(out))"""),
    md(r"""## 2. A model to compress

An MLP with two hidden layers of 512 on the digits, trained for 8 epochs."""),
    code("""%%train --data digits --epochs 8 --lr 1e-3 --seed 0 --quiet
model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))"""),
    code("""print(f"test accuracy {run.evaluate('test')['accuracy']:.3f}")"""),
    md(r"""## 3. Unstructured vs structured pruning

`%compress` works on a copy (the original stays as it is) and reports one row per stage: parameters,
non-zeros, the size of a weights file it actually writes, latency, test accuracy — and whether the
gain is **real**. Latency is measured **side by side**: after a warm-up of both models (first calls
carry one-off costs), each stage and the original are timed alternately in one loop, and the
speed-up is the ratio of their medians — timings taken minutes apart on a shared machine can differ
a hundredfold and mean nothing."""),
    code("%compress model --data digits --prune 0.5 --name unstructured"),
    md(r"""Zeros do not make a dense matrix product faster: the kernel multiplies them all the same. Are
they at least smaller to **store**? Only in a sparse format, and only past a break-even. CSR keeps
every non-zero value (4 bytes in float32) plus its column index (4 bytes as int32, 8 as int64 —
PyTorch's default) and one row pointer per row. Per kept weight that is 8 (or 12) bytes against 4
dense, so CSR is smaller only when fewer than 1/2 (or 1/3) of the weights are kept: above **50 %
sparsity with int32 indices, 67 % with int64**. At 50 % it is not smaller at all. The cell measures
real CSR tensors of the 512×512 layer:"""),
    code("""import warnings

weight = model[2].weight.detach()
dense = weight.numel() * weight.element_size()
print(f"dense: {dense:,} bytes")
for sparsity in (0.5, 0.6, 0.7, 0.9):
    kept = prune_by_magnitude(weight, sparsity)
    with warnings.catch_warnings():                  # PyTorch warns that sparse CSR is in beta
        warnings.simplefilter("ignore")
        csr64 = kept.to_sparse_csr()                 # int64 indices
        csr32 = torch.sparse_csr_tensor(csr64.crow_indices().int(), csr64.col_indices().int(), csr64.values(),
                                        size=kept.shape)
    sizes = [t.values().nbytes + t.col_indices().nbytes + t.crow_indices().nbytes for t in (csr32, csr64)]
    print(f"{sparsity:.0%} zeros: CSR {sizes[0]:,} bytes with int32 indices ({sizes[0] / dense:.2f}× dense), "
          f"{sizes[1]:,} with int64 ({sizes[1] / dense:.2f}×)")
    if sparsity == 0.5:
        assert min(sizes) > dense                    # at 50 % CSR is larger than dense
    if sparsity == 0.7:
        assert sizes[0] < dense and sizes[1] < dense"""),
    md(r"""Pruning that really pays removes whole neurons, so the matrices themselves shrink —
**structured** pruning. Two epochs of fine-tuning then recover the accuracy the cut cost."""),
    code("%compress model --data digits --prune 0.5 --structured --finetune 2 --name structured"),
    code("""u, s = unstructured.stages, structured.stages
print(f"unstructured: {u[1]['nonzero'] / u[1]['params']:.0%} of the weights left, params {u[1]['params']:,} "
      f"(unchanged), marked real={u[1]['real']}, {u[1]['speedup']:.2f}× the original's speed")
print(f"structured:   params {s[0]['params']:,} → {s[1]['params']:,}, {s[1]['speedup']:.2f}× faster, accuracy "
      f"{s[0]['accuracy']:.3f} → {s[1]['accuracy']:.3f} → {s[2]['accuracy']:.3f} after fine-tuning")
assert u[1]["params"] == u[0]["params"] and u[1]["real"] is False
assert s[1]["params"] < 0.55 * s[0]["params"] and s[1]["real"] is True
assert s[2]["accuracy"] >= s[0]["accuracy"] - 0.03
# plausibility: half the parameters is about half the work; a speed-up far beyond that is a timing artefact
assert u[1]["speedup"] < 3 and s[1]["speedup"] < 20 and s[2]["speedup"] < 20"""),
    md(r"""The unstructured row keeps every parameter — half of them are now zero — so its file and its
latency are those of the dense model (small differences there are timing noise). The structured row
removed neurons: the hidden layers are narrower, the parameters halve, and the forward pass does about
half the work, so it is faster by a modest factor — not by orders of magnitude.

## 4. Quantization

- `int8` (dynamic): Linear weights stored as int8 with per-row scales; on a CPU the matrix products run
  in int8, with activations quantized on the fly. Smaller **and** often faster.
- `int8-weight` (weight-only, torchao): int8 storage, weights turned back into floats for each product —
  smaller, not faster on a CPU.
- `fp16` / `bf16`: the whole model cast to 16-bit floats: half the bytes; on many CPUs no faster (the
  speed-up is a GPU's).

Steps run in the order they are given, so prune first and quantize last."""),
    code("%compress model --data digits --quantize int8 --name int8"),
    code("%compress model --data digits --quantize int8-weight --name int8_weight"),
    code("%compress model --data digits --quantize fp16 --name fp16"),
    code("%compress model --data digits --quantize bf16 --name bf16"),
    code("""for name, report in [("int8", int8), ("int8-weight", int8_weight), ("fp16", fp16), ("bf16", bf16)]:
    before, after = report.stages
    print(f"{name:12s} file {before['size_bytes'] / after['size_bytes']:.1f}× smaller, "
          f"{after['speedup']:.2f}× the original's speed, accuracy {before['accuracy']:.3f} → {after['accuracy']:.3f}")
    assert after["speedup"] < 20 and abs(after["accuracy"] - before["accuracy"]) < 0.03
assert int8.stages[1]["size_ratio"] > 3 and int8_weight.stages[1]["size_ratio"] > 3
assert abs(fp16.stages[1]["size_ratio"] - 2) < 0.05 and abs(bf16.stages[1]["size_ratio"] - 2) < 0.05"""),
    md(r"""## 5. Distillation

A **student** much smaller than the model (the **teacher**) learns from the teacher's softened output
distribution as well as from the labels (Hinton et al., 2015). With the student's logits $z_s$, the
teacher's $z_t$, the labels $y$, a temperature $T$ and a weight $\alpha$:

$$L = \alpha\,T^2\,\mathrm{KL}\big(\mathrm{softmax}(z_t/T)\,\|\,\mathrm{softmax}(z_s/T)\big) """
r"""+ (1-\alpha)\,\mathrm{CE}(z_s, y),
\qquad \mathrm{KL}(p\,\|\,q) = \sum_k p_k \log\frac{p_k}{q_k},$$

averaged over the batch. The temperature spreads the teacher's probabilities so the student also
learns which wrong classes are *almost* right ("this 7 looks a bit like a 1"); the $T^2$ keeps that
term's gradients on the scale of the cross-entropy's. The teacher is **frozen**: it runs in eval mode,
under `no_grad`, and its parameters are not in the optimizer. First, the formula written out by hand
against the engine's loss on one batch of digits:"""),
    code("""from bigmodel_nb.engine import load_dataset
from bigmodel_nb.engine.compress import Distiller, distillation_loss

torch.manual_seed(1)
student = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))   # 2,410 parameters
xb, yb = next(iter(load_dataset("digits").train.batches(64, torch.device("cpu"))))
T, alpha = 4.0, 0.5
with torch.no_grad():
    z_s, z_t = student(xb), model.eval()(xb)
p_t, p_s = torch.softmax(z_t / T, -1), torch.softmax(z_s / T, -1)
kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
ce = -torch.log_softmax(z_s, -1)[torch.arange(len(yb)), yb].mean()
by_hand = alpha * T**2 * kl + (1 - alpha) * ce
engine = distillation_loss(z_s, z_t, yb, temperature=T, alpha=alpha)
with torch.no_grad():
    _, trained_on = Distiller(student, model, T, alpha)(xb, yb)        # what a distillation step minimises
print(f"by hand {by_hand:.6f}   distillation_loss {engine:.6f}   Distiller {trained_on:.6f}")
assert torch.allclose(by_hand, engine, rtol=1e-5) and torch.allclose(by_hand, trained_on, rtol=1e-5)"""),
    md(r"""Now `%compress --distill`. Beside the distilled student it reports a **baseline**: the same
student, from the same initial weights, trained alone on the labels with the same budget (epochs,
learning rate, batch size, optimizer, seed and so the same batches) — without it, "distillation
helped" is only a claim. Its defaults (T = 4, α = 0.5, learning rate 3e-2, 10 epochs) were chosen by
measuring on this task: at Adam's usual 1e-3 the soft targets learn more slowly than the labels, and a
distilled student loses to the same student alone; at 3e-2 the teacher's soft targets keep training
steady where the labels alone make it jumpy, and the distilled student won 8 of 12 seeded runs (2 ties).
The report says in one sentence whether distillation beat the baseline."""),
    code("""teacher_before = {k: v.clone() for k, v in model.state_dict().items()}
requires_grad_before = [p.requires_grad for p in model.parameters()]"""),
    code("%compress model --data digits --distill student --seed 0 --quiet --name distilled"),
    code("""teacher_row, student_row = distilled.stages
alone = distilled.baseline
print(f"teacher {teacher_row['params']:,} params, accuracy {teacher_row['accuracy']:.3f}")
print(f"student {student_row['params']:,} params ({teacher_row['params'] / student_row['params']:.0f}× fewer): "
      f"distilled {student_row['accuracy']:.3f}, trained alone {alone['accuracy']:.3f}")
print(distilled.notes[0])
assert teacher_row["params"] / student_row["params"] > 100
assert student_row["accuracy"] >= alone["accuracy"] - 0.01, "within a few test samples at worst"

# the teacher stayed frozen: unchanged, no gradients, requires_grad as it was
used = distilled.runs["distill → Sequential"].model.teacher
assert all(torch.equal(v, teacher_before[k]) for k, v in model.state_dict().items())
assert all(torch.equal(v, teacher_before[k]) for k, v in used.state_dict().items())
assert all(p.grad is None for p in used.parameters()) and not used.training
assert [p.requires_grad for p in model.parameters()] == requires_grad_before
print("teacher frozen: weights unchanged, no gradients")"""),
    md(r"""**Reading the reports.** A row marked real changed what is stored or computed: fewer parameters,
int8 weights, narrower layers. A row marked simulated (unstructured pruning) only shows what a
sparse format or sparse kernels *could* gain — and a sparse format pays only past its break-even.
Speed-ups are ratios of medians measured side by side with the original, so they can be compared
within one report; a ratio far beyond the reduction in work (say 20× for halving a layer) would be a
measurement artefact, not a result. Sizes and accuracies are exact; small timing differences are
noise. On the digits a tiny student gets close to the teacher and the task is nearly saturated:
distillation's gain here is a point or so, and whether it beats training alone depends on the learning
rate and the budget (the student alone at its own best rate, about 1e-2, does about as well). That is
why the report always measures the baseline beside it (`--no-baseline` skips it)."""),
]

execute_and_write(cells, "05_compression.ipynb")
