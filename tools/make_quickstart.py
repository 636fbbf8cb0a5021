"""Writes notebooks/01_quickstart.ipynb (the source of truth for its cells), then executes it
headless so the stored outputs are real. Run: .venv/bin/python tools/make_quickstart.py"""
from notebook_writer import code, execute_and_write, md

cells = [
    md("""# Quickstart: train a model in a notebook cell

This tutorial walks through the **seven steps of a training pipeline** with `bigmodel_nb`:

1. **data preprocessing** — cleaning, normalisation, train / validation / test split;
2. **model construction** — architecture and initialisation;
3. **loss choice** — cross-entropy for classification, MSE for regression;
4. **optimizer choice**;
5. **training** — repeated forward pass, loss, backward pass, update;
6. **validation** — measuring generalisation while training;
7. **evaluation** on the test set — then saving, reloading and inference.

The data is the offline *digits* set: 1,797 handwritten digits of 8×8 pixels (the same task as
MNIST, small enough to train in seconds on a laptop CPU)."""),
    md("## Load the extension\nIt prints the version and the device training will use. The stored output is "
       "that of the machine that built this notebook; yours prints its own device and thread count."),
    code("# NBVAL_IGNORE_OUTPUT\n%load_ext bigmodel_nb"),
    md("`%device` lists every accelerator it found (CUDA, ROCm, Apple MPS, CPU) with memory and usable precisions. "
       "`%device cpu` would make the CPU the default. The table below describes the machine that built this "
       "notebook (its processor, its memory at that moment): run the cell to see yours."),
    code("# NBVAL_IGNORE_OUTPUT\n%device"),
    md("""## 1. Data preprocessing
`load_dataset` returns a `DataBundle` with fixed, seeded train / validation / test splits. Pixels are
scaled to [0, 1] and then standardised with the **training split's** mean and standard deviation —
never the test split's, which would leak information about the test set into training."""),
    code("""# NBVAL_CHECK_OUTPUT
import bigmodel_nb
import torch
from torch import nn

data = bigmodel_nb.load_dataset("digits")
print(data)
X_train, y_train = data.train.tensors()
print("train inputs:", tuple(X_train.shape), "mean %.3f std %.3f" % (X_train.mean(), X_train.std()))"""),
    md("""## 2–5. Model, loss, optimizer, training
The cell body of `%%train` is ordinary Python: it defines `model`. The flags choose the data, the
optimizer and the schedule; the **loss** follows from the task (cross-entropy for classification).
Under the cell a dashboard shows the loss and accuracy curves live, the learning rate, progress and
speed. **Stop** ends the run at the next step (the model and its history are kept), **Pause** holds it
and gives the notebook back to you; the ■ button in the toolbar stops it cleanly too."""),
    code("""%%train --data digits --epochs 10 --lr 3e-3 --seed 0
model = nn.Sequential(
    nn.Linear(64, 128), nn.ReLU(),
    nn.Linear(128, 10),           # one output (logit) per digit class
)"""),
    md("""## 6. Validation
The run is stored as `run`. Its `history` is a list of plain rows: training rows every few steps,
validation rows after each epoch. Validation loss tells you whether the model generalises — when it
starts rising while the training loss keeps falling, the model is overfitting."""),
    code("""import pandas as pd

print(run)
pd.DataFrame(run.rows("val"))[["epoch", "step", "loss", "accuracy"]].tail(3)"""),
    md("## 7. Evaluation on the test set\n"
       "The test split was never used for training or for choosing settings, so this is the honest figure."),
    code("""test = run.evaluate("test")
print(f"test loss {test['loss']:.3f} · test accuracy {test['accuracy']:.3f}")
assert test["accuracy"] >= 0.95, test"""),
    md(r"""### Loss or metric?
The run reports two kinds of numbers, and they do different jobs.

- **Cross-entropy is the training loss**: $L = -\frac{1}{N}\sum_i \log p_\theta(y_i \mid x_i)$, the mean negative
  log-probability the model gives the true class. It uses the probabilities themselves, so it changes
  smoothly with the weights and is differentiable: backpropagation computes $\nabla_\theta L$ and the
  optimizer minimises it. It is reported on the test set too (`loss` above), but it is the objective,
  not a count of right decisions.
- **Accuracy, precision, recall and F1 are metrics**: what we report. They depend only on the decision
  $\hat y = \arg\max_c p_\theta(c \mid x)$, so they stay constant under small weight changes and jump when a
  decision flips — their gradient is zero almost everywhere, and they cannot be trained on directly.

The two can disagree: a model that becomes less sure of its right answers has a higher loss at the
same accuracy.

For class $c$, read the confusion matrix $M$ (rows: true class, columns: predicted class):
$TP_c = M_{cc}$, $FP_c$ = the rest of column $c$ (predicted $c$, but another class), $FN_c$ = the rest of
row $c$ (class $c$, predicted as another).

- precision $P_c = TP_c / (TP_c + FP_c)$ — of the samples predicted $c$, the share that are $c$;
- recall $R_c = TP_c / (TP_c + FN_c)$ — of the samples of class $c$, the share found;
- F1 $= 2 P_c R_c / (P_c + R_c)$, their harmonic mean (low if either is low);
- accuracy $= \sum_c TP_c / N$, the diagonal over the total;
- **macro** average: the plain mean over the classes, so every class counts the same however rare;
  the *weighted* average weights each class by its support (its number of test samples).

A class that is never predicted has no precision ($0/0$); torchmetrics counts it as 0.

The cell computes them by hand with plain torch, then checks them against `bigmodel_nb.evaluate`
(which uses torchmetrics)."""),
    code("""X, y = run.data.test.tensors()
run.model.eval()
with torch.no_grad():
    predicted = run.model(X).argmax(dim=1)

C = run.data.num_classes
confusion = torch.zeros(C, C, dtype=torch.long)   # rows: true class, columns: predicted class
for true_class, predicted_class in zip(y.tolist(), predicted.tolist()):
    confusion[true_class, predicted_class] += 1

tp = confusion.diag().double()
fp = confusion.sum(dim=0) - tp                      # column total minus the diagonal
fn = confusion.sum(dim=1) - tp                      # row total minus the diagonal
precision, recall = tp / (tp + fp), tp / (tp + fn)
f1 = 2 * precision * recall / (precision + recall)
print("accuracy:", round(tp.sum().item() / len(y), 4))
print("precision per class:", [round(v, 2) for v in precision.tolist()])
print("recall per class:   ", [round(v, 2) for v in recall.tolist()])
print(f"macro: precision {precision.mean():.4f} · recall {recall.mean():.4f} · F1 {f1.mean():.4f}")

evaluation = bigmodel_nb.evaluate(run, show=False)   # the library's numbers, not drawn
assert torch.equal(confusion, evaluation.confusion)
for name, by_hand in (("precision", precision), ("recall", recall), ("f1", f1)):
    library = torch.tensor([row[name] for row in evaluation.per_class], dtype=torch.float64)
    assert torch.allclose(by_hand, library, atol=1e-6), name
    assert abs(by_hand.mean().item() - evaluation.metrics[name + "_macro"]) < 1e-6, name
print("same as bigmodel_nb.evaluate: confusion matrix identical, per-class and macro values within 1e-6")"""),
    md("""### What `%%train` does, written by hand
The engine runs the plain PyTorch loop below — with the same seed and the same batches it gives the
same losses. The check recomputes one epoch by hand and compares it with `bigmodel_nb.fit`."""),
    code("""import math
import torch.nn.functional as F
from bigmodel_nb.engine.data import epoch_order

def make_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

# by hand: forward, loss, backward, update — over the same shuffled order the engine uses
model_by_hand = make_model()
opt = torch.optim.Adam(model_by_hand.parameters(), lr=1e-3)
order = epoch_order(len(X_train), seed=5, epoch=0)
losses = []
for i in range(0, len(X_train), 64):
    idx = order[i:i + 64]
    loss = F.cross_entropy(model_by_hand(X_train[idx]), y_train[idx])
    opt.zero_grad(); loss.backward(); opt.step()
    losses.append(loss.item())

engine_run = bigmodel_nb.fit(make_model(), data, epochs=1, lr=1e-3, seed=5, log_every=1)
engine_losses = [r["loss"] for r in engine_run.rows("train")]
print("largest difference:", max(abs(a - b) for a, b in zip(losses, engine_losses)))
assert len(losses) == len(engine_losses) and all(abs(a - b) < 1e-5 for a, b in zip(losses, engine_losses))"""),
    md("""## Save, reload, predict
`run.save` writes a [safetensors](https://huggingface.co/docs/safetensors) file: weights only, plus
JSON metadata (config, last metrics). Loading it never runs pickled code."""),
    code("""path = run.save("digits_mlp.safetensors")
reloaded = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
meta = bigmodel_nb.load_weights(reloaded, path)
print("saved at step", meta["step"], "of a run on", meta["data"])

X_test, y_test = data.test.tensors()
reloaded.eval()
with torch.no_grad():
    predictions = reloaded(X_test[:10]).argmax(dim=1)
print("predicted:", predictions.tolist())
print("actual:   ", y_test[:10].tolist())
assert torch.equal(reloaded(X_test), run.model.eval()(X_test))"""),
    md(r"""## Convolution, padding, stride and pooling
Before training a convolutional network, what its layers compute. A **convolution** slides a small
kernel $K$ of $k \times k$ weights over the image and, at every position, takes the weighted sum of the
pixels under it (plus a bias):

$$y_{ij} = b + \sum_{u=0}^{k-1} \sum_{v=0}^{k-1} K_{uv}\, x_{s i + u,\; s j + v}.$$

(Deep-learning "convolution" does not flip the kernel; mathematicians call this cross-correlation.
With several input channels the sum runs over the channels too, and each output channel has its own
kernel.) **Padding** $p$ adds $p$ rows and columns of zeros around the image, so that the kernel can be
centred on the border pixels; the **stride** $s$ is how far the kernel moves between positions. An
input of $n \times n$ pixels gives an output of

$$\left\lfloor \frac{n + 2p - k}{s} \right\rfloor + 1$$

pixels per side: `kernel_size=3, padding=1` keeps 8×8 at 8×8, stride 2 halves it. The cell writes the
sliding window out and checks it against `F.conv2d`."""),
    code("""def conv2d_by_hand(x, kernel, bias, stride=1, padding=0):
    \"\"\"One input channel, one output channel: slide the kernel over the zero-padded image.\"\"\"
    x = F.pad(x, (padding, padding, padding, padding))             # zeros on all four sides
    k = kernel.shape[0]
    rows, cols = (x.shape[0] - k) // stride + 1, (x.shape[1] - k) // stride + 1
    out = torch.empty(rows, cols)
    for i in range(rows):
        for j in range(cols):
            window = x[i * stride:i * stride + k, j * stride:j * stride + k]
            out[i, j] = (window * kernel).sum() + bias
    return out

image = X_test[0].reshape(8, 8)                                   # one standardised 8×8 digit
torch.manual_seed(0)
kernel, bias = torch.randn(3, 3), torch.randn(())
for stride, padding in [(1, 0), (1, 1), (2, 1)]:
    by_hand = conv2d_by_hand(image, kernel, bias, stride, padding)
    library = F.conv2d(image[None, None], kernel[None, None], bias[None], stride=stride, padding=padding)[0, 0]
    torch.testing.assert_close(by_hand, library)
    formula = (8 + 2 * padding - 3) // stride + 1                  # ⌊(n + 2p − k) / s⌋ + 1
    assert by_hand.shape == (formula, formula)
    print(f"stride {stride}, padding {padding}: output {tuple(by_hand.shape)} = ⌊(8 + 2·{padding} − 3)/{stride}⌋ + 1 "
          f"per side, same as F.conv2d")

# the formula against real layers, on other sizes too
for n, k, p, s in [(28, 5, 0, 1), (28, 3, 1, 2), (32, 7, 3, 2), (9, 4, 1, 3)]:
    out = nn.Conv2d(1, 1, kernel_size=k, padding=p, stride=s)(torch.zeros(1, 1, n, n))
    assert out.shape[-1] == (n + 2 * p - k) // s + 1, (n, k, p, s)"""),
    md(r"""**Pooling** shrinks an image without weights: `MaxPool2d(2)` keeps the largest value of every 2×2
block (stride 2, so 8×8 becomes 4×4). A feature found anywhere in the block survives, and the next
layers see a wider part of the image for the same kernel size."""),
    code("""def max_pool_by_hand(x, size=2):
    rows, cols = x.shape[0] // size, x.shape[1] // size
    return torch.stack([torch.stack([x[i * size:(i + 1) * size, j * size:(j + 1) * size].max() for j in range(cols)])
                        for i in range(rows)])

pooled = max_pool_by_hand(image)
torch.testing.assert_close(pooled, F.max_pool2d(image[None, None], kernel_size=2)[0, 0])
print("8×8 →", tuple(pooled.shape), "· same as F.max_pool2d")"""),
    md(r"""**Parameter sharing.** A convolution uses the *same* kernel at every position, so its parameter count
depends on the kernel and the channels, not on the image size: a 3×3 convolution from 16 to 32
channels has $32 \cdot (16 \cdot 3 \cdot 3 + 1) = 4{,}640$ parameters. A dense layer computing the same
32×8×8 outputs from the same 16×8×8 inputs connects every input to every output: $1024 \cdot 2048 + 2048$,
over 2 million — and it would have to learn a stroke separately at every position where it can appear."""),
    code("""conv = nn.Conv2d(16, 32, kernel_size=3, padding=1)
dense = nn.Linear(16 * 8 * 8, 32 * 8 * 8)                          # same input and output sizes, no sharing
conv_params, dense_params = sum(p.numel() for p in conv.parameters()), sum(p.numel() for p in dense.parameters())
print(f"conv 16→32, 3×3: {conv_params:,} parameters · dense 1,024→2,048: {dense_params:,} "
      f"({dense_params / conv_params:.0f}× more)")
assert conv_params == 32 * (16 * 3 * 3 + 1) and dense_params == 1024 * 2048 + 2048"""),
    md("""## A convolutional network
Convolutions see the digits as 8×8 images rather than 64 unrelated numbers. Ask for the unflattened
images (`flatten=False`, shape 1×8×8) and define a small CNN in the cell: two 3×3 convolutions with
padding 1 (8×8 stays 8×8), a 2×2 max-pool (→ 4×4), and a linear layer from the 32×4×4 features to the
10 classes."""),
    code("""digits_images = bigmodel_nb.load_dataset("digits", flatten=False)
digits_images.input_shape"""),
    code("""%%train --data digits_images --epochs 8 --lr 3e-3 --seed 0 --name cnn_run
model = nn.Sequential(
    nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(),
    nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(),
    nn.MaxPool2d(2),                               # 8×8 → 4×4
    nn.Flatten(),
    nn.Linear(32 * 4 * 4, 10),
)"""),
    code("""cnn_test = cnn_run.evaluate("test")
print(f"CNN test accuracy on the 8×8 digits, measured here: {cnn_test['accuracy']:.3f}")
assert cnn_test["accuracy"] >= 0.95"""),
    md("""### And on MNIST?
The articles this tutorial follows quote a small CNN reaching **98.5 % test accuracy on MNIST** after 10
epochs (batch 128, Adam). That is *their* figure: nothing in this notebook measured it, and the figure
above is for the 8×8 digits, a smaller and different data set. MNIST (70,000 images of 28×28) has to
be downloaded; when it can be, the cell below trains the same kind of CNN on a 6,000-image slice for
two epochs (to stay quick on a laptop) and prints what it reaches; without a network it says so and
measures nothing. Ten epochs on the full 60,000 images (`--data mnist --epochs 10 --batch-size 128`)
is the sources' setting."""),
    code("""# NBVAL_IGNORE_OUTPUT
from bigmodel_nb.engine.core.errors import BigModelError

try:
    mnist = bigmodel_nb.load_dataset("mnist", flatten=False, limit=6000)
except BigModelError:
    mnist = None
    print("MNIST could not be downloaded here (no network), so no MNIST accuracy was measured in this run.")
if mnist is not None:
    torch.manual_seed(0)
    mnist_cnn = nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 28×28 → 14×14
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14×14 → 7×7
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    mnist_run = bigmodel_nb.fit(mnist_cnn, mnist, epochs=2, batch_size=128, lr=1e-3, seed=0)
    print(f"MNIST, {len(mnist.train.tensors()[1]):,} training images, 2 epochs: "
          f"test accuracy {mnist_run.evaluate('test')['accuracy']:.3f} (measured in this run)")"""),
    md("""### The full report: `%evaluate`
`%evaluate` scores a finished run (or a model with `--data`) on a split — the test split unless
`--split` says otherwise — and stores an `Evaluation` in `evaluation` (`--name` picks another variable):
`.metrics`, `.per_class`, `.confusion`, `.top_losses(k)`, `.most_confused(k)`, `.example(index)`."""),
    code("%evaluate cnn_run"),
    md(r"""How to read it:

- **Confusion matrix** — row = true digit, column = prediction; the diagonal holds the correct answers,
  every cell off it is one kind of mistake. *row-normalised* divides each row by its total, so the
  diagonal becomes each class's recall. **Most confused** lists the largest off-diagonal cells
  (true → predicted, with their counts): the pairs of digits the model mixes up.
- **Top losses** — the test samples with the highest loss $-\log p(\text{true class})$, each titled with its
  index in the test split, the true label, the prediction and the probability the model gave that
  prediction. A wrong answer given with high probability costs the most; a right answer given with low
  probability can appear too. Look at them: some are badly written or ambiguous digits (a few data sets
  even hold wrong labels), others show what the model has not learned. `evaluation.example(i)`
  returns the input of sample `i`.
- **Reliability curve** — the predictions are grouped in 15 bins by confidence (the probability of the
  predicted class); each bar is the accuracy in its bin. A calibrated model is right 90% of the time
  when it says 90%, so the bars follow the diagonal; a bar below it means over-confidence, above it
  under-confidence. The **ECE** (expected calibration error) sums the gaps, weighted by how many
  samples fall in each bin:
  $\mathrm{ECE} = \sum_b \frac{n_b}{N}\,\lvert \mathrm{acc}_b - \mathrm{conf}_b \rvert$.

The top losses and the ECE by hand, checked against the report:"""),
    code("""X_images, y_images = cnn_run.data.test.tensors()
cnn_run.model.eval()
with torch.no_grad():
    logits = cnn_run.model(X_images)
sample_losses = F.cross_entropy(logits, y_images, reduction="none")   # -log p(true class), one per sample
worst = sample_losses.topk(5)
print("highest losses at test samples", worst.indices.tolist())
assert worst.indices.tolist() == [r["index"] for r in evaluation.top_losses(5)]

confidence, guess = logits.softmax(dim=1).max(dim=1)
correct = (guess == y_images).double()
edges = torch.linspace(0, 1, 16)                     # 15 equal-width bins, as torchmetrics:
bin_of = torch.bucketize(confidence, edges, right=True) - 1   # bin b: edges[b] <= confidence < edges[b + 1]
ece = 0.0
for b in bin_of.unique():
    inside = bin_of == b
    ece += inside.double().mean() * (correct[inside].mean() - confidence[inside].double().mean()).abs()
print(f"ECE by hand {ece:.4f} · from %evaluate {evaluation.metrics['ece']:.4f}")
assert abs(ece - evaluation.metrics["ece"]) < 1e-5"""),
    md("""## Early stopping
`--early-stop N` watches the validation loss (`--monitor val_accuracy` watches accuracy instead) and
stops after N validations in a row without improvement — usually a sign that the model has started
to overfit. The last weights are then N validations past the best ones, so the run **restores the best
validation's weights** into `run.model` (`run.best` is that validation row): the model you evaluate
and save is the best one seen, not the last. The choice is made on the validation split, so the test
split stays unseen."""),
    code("""%%train --data digits --epochs 40 --lr 3e-3 --early-stop 3 --seed 0 --name early_run --quiet
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))"""),
    code("""print(early_run.notes[-1])
print("best validation:", {k: round(early_run.best[k], 4) for k in ("epoch", "step", "loss", "accuracy")})
# the restored model scores exactly the best validation row, not the last one
assert abs(early_run.evaluate("val")["loss"] - early_run.best["loss"]) < 1e-6"""),
    md("""## From Python
Every magic has a Python twin. `bigmodel_nb.train` shows the same dashboard; `bigmodel_nb.fit` trains
without any display (scripts, tests, a cluster).

```python
run = bigmodel_nb.train(model, "digits", epochs=5, lr=1e-3, background=True)  # returns at once
run.pause(); run.resume(); run.stop(); run.wait()
```

With network access, the same cells run on MNIST (`--data mnist`); the section "And on MNIST?" above
does it on a slice."""),
]


execute_and_write(cells, "01_quickstart.ipynb", cleanup=("digits_mlp.safetensors",))
