"""Writes notebooks/03_gradients.ipynb (the source of truth for its cells), then executes it
headless so the stored outputs are real. Run: .venv/bin/python tools/make_gradients_nb.py"""
from notebook_writer import code, execute_and_write, md

cells = [
    md(r"""# Gradient flow: why deep sigmoid networks stop learning, and how to see it

A network learns only where gradients reach. This tutorial:

1. writes the **forward pass** and **backpropagation** of a small dense network by hand and checks
   every gradient against autograd;
2. shows from the formula why a deep stack of **sigmoid** layers loses its gradient on the way back
   (**vanishing gradients**), and what ReLU, residual connections and normalisation change;
3. measures it with `%grads`, which records per-layer gradient norms over a few training steps and
   flags vanishing, exploding and dead units;
4. trains a CNN on digits with `%%train --watch-grads`, which adds the same panel to the live dashboard."""),
    code("%load_ext bigmodel_nb"),
    code("""import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from bigmodel_nb.models import CNN, MLP, CNNConfig, MLPConfig"""),
    md(r"""## 1. Forward and backward, by hand

A dense layer computes $z^{(l)} = W^{(l)} a^{(l-1)} + b^{(l)}$ and applies an activation,
$a^{(l)} = \sigma(z^{(l)})$, starting from the input $a^{(0)} = x$. For classification the last layer's
$z^{(L)}$ are the logits, and the loss is the cross-entropy of their softmax.

Backpropagation is the chain rule, organised around $\delta^{(l)} = \partial L / \partial z^{(l)}$:

$$\delta^{(L)} = \mathrm{softmax}(z^{(L)}) - \mathrm{onehot}(y), \qquad
\delta^{(l)} = \big(W^{(l+1)\top} \delta^{(l+1)}\big) \odot \sigma'(z^{(l)}),$$
$$\frac{\partial L}{\partial W^{(l)}} = \delta^{(l)} a^{(l-1)\top}, """
r"""\qquad \frac{\partial L}{\partial b^{(l)}} = \delta^{(l)}.$$

Below, a 64-32-32-10 sigmoid network on a batch of digits (rows are samples, so the products are
transposed and the loss is averaged over the batch), in float64, against `loss.backward()`."""),
    code("""from bigmodel_nb import load_dataset

digits = load_dataset("digits")
X, y = digits.train.tensors()
x, target = X[:32].double(), y[:32]

torch.manual_seed(0)
sizes = [64, 32, 32, 10]
W = [(torch.randn(o, i, dtype=torch.float64) / i ** 0.5).requires_grad_() for i, o in zip(sizes, sizes[1:])]
b = [torch.zeros(o, dtype=torch.float64, requires_grad=True) for o in sizes[1:]]

# forward: keep every z and a
a, zs, activations = x, [], [x]
for l, (Wl, bl) in enumerate(zip(W, b)):
    z = a @ Wl.T + bl
    a = torch.sigmoid(z) if l < len(W) - 1 else z                # no activation on the logits
    zs.append(z); activations.append(a)
loss = F.cross_entropy(zs[-1], target)
loss.backward()                                                  # autograd's answer, in .grad

# backward by hand
with torch.no_grad():
    delta = (torch.softmax(zs[-1], dim=1) - F.one_hot(target, 10)) / len(x)   # δ⁽ᴸ⁾, batch-averaged
    for l in reversed(range(len(W))):
        dW, db = delta.T @ activations[l], delta.sum(0)
        print(f"layer {l + 1}: |dW − autograd| = {(dW - W[l].grad).abs().max():.1e}, ‖δ‖ = {delta.norm():.2e}")
        assert torch.allclose(dW, W[l].grad, atol=1e-12) and torch.allclose(db, b[l].grad, atol=1e-12)
        if l:
            s = torch.sigmoid(zs[l - 1])
            delta = (delta @ W[l]) * s * (1 - s)                 # δ⁽ˡ⁾ = (W⁽ˡ⁺¹⁾ᵀ δ⁽ˡ⁺¹⁾) ⊙ σ'(z⁽ˡ⁾)"""),
    md(r"""## 2. Why the gradient vanishes

Look at the factor $\sigma'(z) = \sigma(z)(1 - \sigma(z))$: it is at most $\tfrac14$ (at $z = 0$) and
much smaller for large $|z|$. Every layer the error signal passes back through multiplies it by
$W^\top$ and by such a factor, so after $k$ sigmoid layers it has been scaled by up to $4^{-k}$ — unless
the weights are large, which saturates the sigmoids and makes $\sigma'$ even smaller. The norms above
already shrink layer by layer; in a deep stack the **first layers get almost no gradient and barely
learn**, while the last ones do.

### tanh: between sigmoid and ReLU

The hyperbolic tangent is a rescaled sigmoid centred on zero,

$$\tanh z = \frac{e^{z} - e^{-z}}{e^{z} + e^{-z}} = 2\sigma(2z) - 1, \qquad \tanh'(z) = 1 - \tanh^2 z .$$

Its outputs lie in $(-1, 1)$ and average near zero, and its derivative reaches **1** at $z = 0$ — four
times the sigmoid's $\tfrac14$ — so near zero it passes the error signal back almost unchanged. But it
still **saturates**: for large $|z|$, $\tanh'(z) \approx 4e^{-2|z|}$ falls even faster than
$\sigma'(z) \approx e^{-|z|}$. ReLU's derivative is exactly 1 for every $z > 0$, however large. The cell
checks the formula and the derivative against torch and autograd, then tabulates the three derivatives."""),
    code("""z = torch.linspace(-6, 6, 241, dtype=torch.float64, requires_grad=True)
tanh_by_formula = (z.exp() - (-z).exp()) / (z.exp() + (-z).exp())
torch.testing.assert_close(tanh_by_formula, torch.tanh(z))
torch.testing.assert_close(torch.tanh(z), 2 * torch.sigmoid(2 * z) - 1)

torch.tanh(z).sum().backward()                                  # autograd's d tanh / dz, element by element
torch.testing.assert_close(z.grad, 1 - torch.tanh(z.detach()) ** 2)

def derivatives(v):
    v = torch.tensor(float(v), dtype=torch.float64)
    s = torch.sigmoid(v)
    return {"sigmoid'": (s * (1 - s)).item(), "tanh'": (1 - torch.tanh(v) ** 2).item(), "relu'": float(v > 0)}

table = pd.DataFrame({f"z = {v}": derivatives(v) for v in (0.5, 1, 2, 4)}).T
assert z.grad.max() == 1 and torch.allclose(z.grad.max(), 4 * (torch.sigmoid(z) * (1 - torch.sigmoid(z))).max())
assert derivatives(4)["tanh'"] < derivatives(4)["sigmoid'"] < derivatives(4)["relu'"] == 1
table.round(4)"""),
    md(r"""Through ten layers the difference compounds. Three 10-layer stacks of width 64, each initialised
with its activation's recommended gain (`nn.init.xavier_normal_` with `calculate_gain`), one backward
pass on a batch of digits: the first layer's gradient relative to the last layer's."""),
    code("""def first_over_last(activation, name, seed=0):
    torch.manual_seed(seed)
    layers = []
    for _ in range(10):
        layers += [nn.Linear(64, 64), activation()]
    net = nn.Sequential(*layers, nn.Linear(64, 10))
    linears = [m for m in net if isinstance(m, nn.Linear)]
    for m in linears:
        nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain(name))
        nn.init.zeros_(m.bias)
    F.cross_entropy(net(X[:256]), y[:256]).backward()
    return (linears[0].weight.grad.norm() / linears[-1].weight.grad.norm()).item()

stacks = [(nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"), (nn.ReLU, "relu")]
ratios = {name: first_over_last(activation, name) for activation, name in stacks}
print("first-layer / last-layer gradient norm:", {k: f"{v:.1e}" for k, v in ratios.items()})
assert ratios["sigmoid"] < 1e-3 < min(ratios["tanh"], ratios["relu"])"""),
    md(r"""With a good initialisation tanh keeps the gradient alive where sigmoid loses it — as long as its
inputs stay near zero; large weights or inputs push it into saturation, which ReLU does not have
(ReLU's failure is the opposite one: a unit whose input is always negative passes back nothing).
What helps:

* **ReLU**: its derivative is exactly 1 wherever the unit is active, so it does not shrink the signal
  (but a unit that is never active passes back nothing — a *dead ReLU*);
* **residual connections** $a^{(l)} = a^{(l-1)} + f(a^{(l-1)})$: the identity path carries the gradient
  back unchanged, $\partial a^{(l)}/\partial a^{(l-1)} = I + \partial f/\partial a^{(l-1)}$;
* **normalisation** (LayerNorm, BatchNorm) keeps every layer's inputs in the range where the activation's
  derivative is not tiny.

`%grads` trains a **copy** of a model for a few steps and records the gradient norm of every layer at
every step. Two 10-layer networks of width 64 — sigmoid, and ReLU with LayerNorm and residual
connections:"""),
    code("""torch.manual_seed(0)
deep_sigmoid = MLP(MLPConfig(input_dim=64, hidden=(64,) * 10, num_classes=10, activation="sigmoid"))
torch.manual_seed(0)
deep_residual = MLP(MLPConfig(input_dim=64, hidden=(64,) * 10, num_classes=10, activation="relu",
                              norm=True, residual=True))"""),
    code("%grads deep_sigmoid --data digits --steps 30 --name sigmoid_grads"),
    code("%grads deep_residual --data digits --steps 30 --name residual_grads"),
    md(r"""The heatmap shows layers (rows, input at the top) against steps, coloured by $\log_{10}$ of the
gradient norm; the bars show the latest norm per layer on a log axis. Side by side, first layer against
last:"""),
    code("""def first_vs_last(report):
    first, last = report.layers[0], report.layers[-1]
    return np.median(report.norms[first]), np.median(report.norms[last])

rows = []
for name, report in [("sigmoid", sigmoid_grads), ("relu + norm + residual", residual_grads)]:
    first, last = first_vs_last(report)
    rows.append({"network": name, "first layer": first, "last layer": last, "first / last": first / last,
                 "flags": ", ".join(f["kind"] for f in report.flags) or "none"})
pd.DataFrame(rows).set_index("network")"""),
    code("""assert any(f["kind"] == "vanishing" for f in sigmoid_grads.flags)
assert not residual_grads.flags
assert first_vs_last(sigmoid_grads)[0] / first_vs_last(sigmoid_grads)[1] < 1e-3 < \\
       first_vs_last(residual_grads)[0] / first_vs_last(residual_grads)[1]
# inspection trained copies: the models themselves are untouched
assert all(p.grad is None for p in deep_sigmoid.parameters())"""),
    md(r"""**Does it matter for training?** Train both for the same three epochs (Adam, the same batches). The
sigmoid network's early layers hardly move, so it learns slowly if at all; the other one trains."""),
    code("%train deep_sigmoid --data digits --epochs 3 --lr 1e-3 --seed 0 --quiet --name sigmoid_run"),
    code("%train deep_residual --data digits --epochs 3 --lr 1e-3 --seed 0 --quiet --name residual_run"),
    code("""sigmoid_acc = sigmoid_run.evaluate("test")["accuracy"]
residual_acc = residual_run.evaluate("test")["accuracy"]
print(f"test accuracy after 3 epochs: sigmoid {sigmoid_acc:.3f}, relu + norm + residual {residual_acc:.3f}")
assert residual_acc > 0.9 and residual_acc > sigmoid_acc + 0.2"""),
    md(r"""## 3. Watching gradients while training

`%%train --watch-grads` records the same statistics during a normal run and shows them live under the
loss curves; `--watch-every N` records every N-th step to keep the cost down. At the end the report is
stored as `run.gradients`. Here, the zoo's small CNN on the 8×8 digits (two conv blocks, then a linear
head; it reshapes the flat 64 pixels into a 1×8×8 image)."""),
    code("""%%train --data digits --epochs 5 --lr 3e-3 --seed 0 --watch-grads --watch-every 5
model = CNN(CNNConfig(in_channels=1, channels=(16, 32), num_classes=10))"""),
    code("""# NBVAL_IGNORE_OUTPUT
run.gradients.table()"""),
    code("""test = run.evaluate("test")
print(f"CNN test accuracy {test['accuracy']:.3f}; gradient flags: {run.gradients.flags or 'none'}")
assert test["accuracy"] > 0.93
assert set(run.gradients.layers) >= {name for name in run.gradients.norms}
assert len(next(iter(run.gradients.norms.values()))) == run.step // 5"""),
    md(r"""## What gradient norms show, and what they do not

They show **where learning can happen**: a layer whose gradient is $10^{-6}$ of its neighbours' will
barely change, whatever the optimizer. A growing norm warns of instability before the loss turns into
NaN, and the first layer with a non-finite gradient points at where it started.

They do **not** show that a model is learning the right thing: healthy norms are compatible with
memorising the training set. A small norm is not always a problem either — near a minimum every
gradient is small, and adaptive optimizers such as Adam rescale each parameter's step, so the
**update/weight ratio** (also recorded, $\|\Delta\theta\| / \|\theta\|$, typically around $10^{-3}$ per step)
says more about how fast a layer actually moves. And they are measured on a few batches: look at the
trend over steps, not at one number."""),
]


execute_and_write(cells, "03_gradients.ipynb")
