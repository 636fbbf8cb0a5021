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
    md("## Load the extension\nIt prints the version and the device training will use."),
    code("%load_ext bigmodel_nb"),
    md("`%device` lists every accelerator it found (CUDA, ROCm, Apple MPS, CPU) with memory and usable precisions. "
       "`%device cpu` would make the CPU the default."),
    code("%device"),
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
    md("""## A convolutional network
Convolutions see the digits as 8×8 images rather than 64 unrelated numbers. Ask for the unflattened
images (`flatten=False`, shape 1×8×8) and define a small CNN in the cell."""),
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
print(f"CNN test accuracy {cnn_test['accuracy']:.3f}")
assert cnn_test["accuracy"] >= 0.95"""),
    md("""## From Python
Every magic has a Python twin. `bigmodel_nb.train` shows the same dashboard; `bigmodel_nb.fit` trains
without any display (scripts, tests, a cluster).

```python
run = bigmodel_nb.train(model, "digits", epochs=5, lr=1e-3, background=True)  # returns at once
run.pause(); run.resume(); run.stop(); run.wait()
```

With network access, the same cells run on MNIST (`--data mnist`), where the classic result is a small
CNN reaching about 98.5% test accuracy after 10 epochs with batch 128 and Adam."""),
]


execute_and_write(cells, "01_quickstart.ipynb", cleanup=("digits_mlp.safetensors",))
