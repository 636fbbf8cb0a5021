"""Writes notebooks/05_compression.ipynb (the source of truth for its cells), then executes it
headless so the stored outputs are real. Run: .venv/bin/python tools/make_compression_nb.py"""
from notebook_writer import code, execute_and_write, md

cells = [
    md(r"""# Compression: pruning, quantization and distillation, honestly measured

A trained model can often be made smaller or faster at little cost in accuracy. This tutorial:

1. writes **magnitude pruning** and **int8 quantization** by hand, the correct way (and shows two
   mistakes found in written material that silently change nothing);
2. uses `%compress` to prune a digits classifier **unstructured** (weights set to zero) and
   **structured** (neurons removed), and shows why only the second one is faster;
3. **quantizes** it to int8 and half precision;
4. **distills** it into a much smaller student;
5. reads the report: which gains are real, which are only simulated."""),
    code("%load_ext bigmodel_nb"),
    code("""import torch
import torch.nn.functional as F
from torch import nn"""),
    md(r"""## 1. Pruning and quantization by hand

**Magnitude pruning** keeps the weights with the largest $|w|$ and sets the rest to zero: a mask
$m = [\,|w| \ge \tau\,]$ with the threshold $\tau$ chosen so that a fraction $r$ is removed, and
$w \leftarrow w \odot m$. **Symmetric int8 quantization** stores $q = \mathrm{round}(w / s)$ clipped to
$[-127, 127]$ with one scale $s = \max|w| / 127$ per output row, and computes with $\hat w = s\,q$.

Two mistakes circulate. One builds the mask by thresholding *the mask itself* (a tensor of ones), so
it keeps everything; the other rounds the weights into a local variable and never writes them back,
so the model is unchanged. Both "run", which is why they survive; the checks below catch them."""),
    code("""torch.manual_seed(0)
layer = nn.Linear(64, 32)
w = layer.weight.detach().clone()

def prune_by_magnitude(w, ratio):
    threshold = w.abs().flatten().kthvalue(int(ratio * w.numel())).values
    return w * (w.abs() > threshold)                   # the mask comes from |w|

def prune_wrong(w, ratio):
    mask = torch.ones_like(w)
    threshold = mask.flatten().kthvalue(int(ratio * w.numel())).values
    return w * (mask >= threshold)                     # thresholds the mask of ones: keeps everything

def quantize_int8(w):
    scale = w.abs().amax(dim=1, keepdim=True) / 127    # one scale per output row
    q = torch.clamp(torch.round(w / scale), -127, 127).to(torch.int8)
    return q, scale

pruned = prune_by_magnitude(w, 0.5)
print(f"correct pruning: {(pruned == 0).float().mean():.0%} zeros; """
      """wrong pruning: {(prune_wrong(w, 0.5) == 0).float().mean():.0%} zeros")
assert abs((pruned == 0).float().mean() - 0.5) < 0.01 and (prune_wrong(w, 0.5) != 0).all()

q, scale = quantize_int8(w)
error = (q.float() * scale - w).abs().max()
print(f"int8: {q.numel()} bytes instead of {w.numel() * 4} (plus {scale.numel()} scales), """
      """max error {error:.4f} ≤ s/2 = {scale.max() / 2:.4f}")
assert error <= scale.max() / 2 + 1e-6

def quantize_wrong(layer):
    weight = layer.weight.data
    weight = torch.round(weight * 127) / 127           # rebinds a local name: the layer is untouched
quantize_wrong(layer)
assert torch.equal(layer.weight, w), "this version changes nothing"
with torch.no_grad():                                  # what writing the result back looks like
    layer.weight.copy_(q.float() * scale)
assert not torch.equal(layer.weight, w)"""),
    md(r"""Zeros do not make a dense matrix product faster: the kernel multiplies them all the same. A
pruned weight matrix is smaller only when **stored** sparsely, and faster only with sparse kernels at
high sparsity, or when whole rows are removed so the matrices themselves shrink — **structured**
pruning.

## 2. A model to compress

An MLP with two hidden layers of 512 on the digits, trained for 8 epochs."""),
    code("""%%train --data digits --epochs 8 --lr 1e-3 --seed 0 --quiet
model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))"""),
    code("""print(f"test accuracy {run.evaluate('test')['accuracy']:.3f}")"""),
    md(r"""## 3. Unstructured vs structured pruning

`%compress` works on a copy (the original stays as it is) and reports one row per stage: parameters,
non-zeros, the size of a weights file it actually writes, latency (median of timed runs after
warm-up, with the batch size and threads stated), test accuracy — and whether the gain is **real**."""),
    code("%compress model --data digits --prune 0.5 --name unstructured"),
    code("%compress model --data digits --prune 0.5 --structured --finetune 2 --name structured"),
    code("""u, s = unstructured.stages, structured.stages
print(f"unstructured: {u[1]['nonzero'] / u[1]['params']:.0%} of the weights left, params {u[1]['params']:,} "
      f"(unchanged), marked real={u[1]['real']}")
print(f"structured:   params {s[0]['params']:,} → {s[1]['params']:,}, accuracy {s[0]['accuracy']:.3f} → "
      f"{s[1]['accuracy']:.3f} → {s[2]['accuracy']:.3f} after fine-tuning")
assert u[1]["params"] == u[0]["params"] and u[1]["real"] is False
assert s[1]["params"] < 0.55 * s[0]["params"] and s[1]["real"] is True
assert s[2]["accuracy"] >= s[0]["accuracy"] - 0.03"""),
    md(r"""The unstructured row keeps every parameter — half of them are now zero — so its file and its
latency are those of the dense model (differences there are timing noise). The structured row
removed neurons: the hidden layers are narrower, the parameters halve, and the forward pass does
half the work. A couple of epochs of fine-tuning recover most of the accuracy the cut cost.

## 4. Quantization

`--quantize int8` stores the Linear weights as int8 with per-row scales and, on a CPU, runs int8
matrix products with activations quantized on the fly (dynamic quantization); `fp16`/`bf16` cast the
whole model. Steps run in the order they are given, so prune first and quantize last."""),
    code("%compress model --data digits --quantize int8 --name int8"),
    code("%compress model --data digits --quantize bf16 --name bf16"),
    code("""for name, report in [("int8", int8), ("bf16", bf16)]:
    before, after = report.stages
    print(f"{name}: file {before['size_bytes'] / after['size_bytes']:.1f}× smaller, "
          f"accuracy {before['accuracy']:.3f} → {after['accuracy']:.3f}")
assert int8.stages[0]["size_bytes"] / int8.stages[1]["size_bytes"] > 3
assert abs(int8.stages[1]["accuracy"] - int8.stages[0]["accuracy"]) < 0.03"""),
    md(r"""## 5. Distillation

A **student** much smaller than the model (the **teacher**) learns from the teacher's softened output
distribution as well as from the labels (Hinton et al., 2015):

$$L = \alpha\,T^2\,\mathrm{KL}\big(\mathrm{softmax}(z_t/T)\,\|\,\mathrm{softmax}(z_s/T)\big) """
r"""+ (1-\alpha)\,\mathrm{CE}(z_s, y).$$

The temperature $T$ spreads the teacher's probabilities so the student also learns which wrong
classes are *almost* right ("this 7 looks a bit like a 1"); the $T^2$ keeps that term's gradients
on the scale of the cross-entropy's. The teacher is frozen. Below, a student with over 100× fewer
parameters, distilled and, for comparison, trained alone for the same epochs from the same initial weights."""),
    code("""torch.manual_seed(1)
student = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
torch.manual_seed(1)
alone = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))"""),
    code("%compress model --data digits --distill student --epochs 10 --lr 3e-3 --seed 0 --quiet --name distilled"),
    code("%train alone --data digits --epochs 10 --lr 3e-3 --seed 0 --quiet --name alone_run"),
    code("""teacher, student_row = distilled.stages
alone_acc = alone_run.evaluate("test")["accuracy"]
print(f"teacher {teacher['params']:,} params, accuracy {teacher['accuracy']:.3f}")
print(f"student {student_row['params']:,} params: distilled {student_row['accuracy']:.3f}, """
      """trained alone {alone_acc:.3f}")
assert teacher["params"] / student_row["params"] > 25
assert student_row["accuracy"] > teacher["accuracy"] - 0.05"""),
    md(r"""**Reading the reports.** A row marked real changed what is stored or computed: fewer parameters,
int8 weights, narrower layers. A row marked simulated (unstructured pruning) only shows what a
sparse format or sparse kernels *could* gain. Latency on a shared 2-core machine is noisy: compare
ratios within one report, and trust sizes and accuracies more than small timing differences. On
digits a tiny student gets within a few points of the teacher either way, and one run can favour
either method by a few test samples; distillation's advantage is small on an easy task like this and
grows with harder tasks (`bench/compress.py` measures it over three seeds with a larger student)."""),
]

execute_and_write(cells, "05_compression.ipynb")
