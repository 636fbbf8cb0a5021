"""Writes notebooks/02_optimizers.ipynb (the source of truth for its cells), then executes it
headless so the stored outputs are real. Run: .venv/bin/python tools/make_optimizers_nb.py"""
from notebook_writer import code, execute_and_write, md

cells = [
    md(r"""# Optimizers: from gradient descent to AdamW, schedules and the LR range test

Training a network means minimising a loss $L(\theta)$ over its parameters $\theta$. An **optimizer**
decides how to turn gradients into parameter updates. This tutorial:

1. starts from **gradient descent** and shows that batch, mini-batch and stochastic gradient descent
   are one algorithm with a different batch size $m$;
2. writes **SGD, momentum, Nesterov, RMSprop, Adam and AdamW** in about ten lines each and checks every
   one against the real `torch.optim` optimizer — step by step, to within $10^{-6}$;
3. tries three learning rates on a digits MLP and **compares the runs** in one table with `%runs`, then
   makes the learning rate **decay** with the schedules `bigmodel_nb` offers and trains with one of them;
4. draws the optimizers' **paths on a 2-D function** (Rosenbrock, a saddle) with `%compare_optimizers --function`;
5. **compares them on a real network** — same initial weights, same batches — with `%%compare_optimizers`;
6. runs the **learning-rate range test** (`%lr_find`) and trains with the LR it suggests.

Every formula below is implemented in a cell and checked, so where the written material you may have
read disagrees with the code, the code is what PyTorch actually does."""),
    md("## Load the extension"),
    code("%load_ext bigmodel_nb"),
    md(r"""## 1. Gradient descent

Gradient descent repeats one update with a **learning rate** $\alpha$:

$$\theta \leftarrow \theta - \alpha \, \nabla L(\theta).$$

The loss of a data set is an average over its $N$ samples, $L(\theta) = \frac{1}{N}\sum_{i=1}^{N}
\ell(\theta; x_i, y_i)$, so its gradient is an average of per-sample gradients. Computing it over all
$N$ samples for every update is expensive; instead we estimate it from a **batch** of $m$ samples:

$$\theta \leftarrow \theta - \alpha \, \frac{1}{m} \sum_{i \in \text{batch}} \nabla \ell(\theta; x_i, y_i).$$

| name | batch size | each update |
|---|---|---|
| batch gradient descent | $m = N$ | exact gradient, one update per pass over the data (*epoch*) |
| mini-batch gradient descent | $1 < m < N$ | a noisy estimate, $N/m$ updates per epoch |
| stochastic gradient descent (SGD) | $m = 1$ | a very noisy estimate, $N$ updates per epoch |

The three are **the same code with a different $m$**. Here they are on a small least-squares problem,
$\ell(\theta; x, y) = (x^\top\theta - y)^2$, whose gradient we can write by hand:
$\nabla L_{\text{batch}}(\theta) = \frac{2}{m} X_b^\top (X_b\theta - y_b)$. Everything is float64 NumPy."""),
    code("""# NBVAL_CHECK_OUTPUT
import numpy as np

rng = np.random.default_rng(0)
N, d = 200, 5
X = rng.standard_normal((N, d))
w_true = rng.standard_normal(d)
y = X @ w_true + 0.1 * rng.standard_normal(N)          # a linear target plus a little noise

def loss(theta, idx=slice(None)):
    residual = X[idx] @ theta - y[idx]
    return float(np.mean(residual ** 2))

def grad(theta, idx=slice(None)):
    Xb, yb = X[idx], y[idx]
    return 2 * Xb.T @ (Xb @ theta - yb) / len(Xb)

theta_best = np.linalg.lstsq(X, y, rcond=None)[0]       # the exact minimiser, for reference
print(f"N = {N} samples, d = {d} parameters; lowest possible loss {loss(theta_best):.4f}")"""),
    md("One function covers all three variants: shuffle once per epoch, walk through the data in batches of `m`, "
       "update after each batch."),
    code("""import pandas as pd

def gradient_descent(m, lr=0.05, epochs=5, seed=0):
    order_rng = np.random.default_rng(seed)
    theta, updates = np.zeros(d), 0
    for epoch in range(epochs):
        order = order_rng.permutation(N)
        for start in range(0, N, m):
            batch = order[start:start + m]
            theta = theta - lr * grad(theta, batch)     # θ ← θ − α (1/m) Σ ∇ℓ
            updates += 1
    return theta, updates

table = []
for name, m in [("batch", N), ("mini-batch", 20), ("stochastic", 1)]:
    theta, updates = gradient_descent(m)
    table.append({"method": name, "m": m, "updates in 5 epochs": updates,
                  "final loss": loss(theta), "gap to best": loss(theta) - loss(theta_best)})
table = pd.DataFrame(table)
assert table["final loss"].iloc[1] < table["final loss"].iloc[0]   # more updates for the same data seen
table"""),
    md(r"""All three saw every sample five times. **Batch** gradient descent made only 5 (exact) updates and is
far from the minimum; **mini-batch** made 50 and is close to it; **stochastic** made 1,000 but each
was so noisy that it keeps bouncing around the minimum with a constant $\alpha$ — that leftover
noise is one reason to let the learning rate decay (section 3). Because the samples of a batch are
processed in parallel, a mini-batch of a few hundred costs little more time than one sample, """
r"""which is why mini-batches (here 16–256) are the default in practice;
PyTorch's optimizer called "SGD" is in fact used as mini-batch gradient descent."""),
    md(r"""## 2. Six optimizers, written by hand and checked against `torch.optim`

Each optimizer below is a function `step(theta, g, state, t, **hyperparameters)` that receives the
mini-batch gradient $g$ at step $t = 1, 2, \dots$ and returns the new parameters. The harness runs it
for **50 steps** on the least-squares problem above, with **fixed mini-batches** (ten batches of 20,
in order), from the same random start, next to the real `torch.optim` optimizer, whose gradient comes
from autograd rather than from our formula. `check` compares the parameters after every step and
**fails if they ever differ by more than $10^{-6}$**."""),
    code("""import torch
from torch import nn

batches = [np.arange(start, start + 20) for start in range(0, N, 20)]   # fixed, in order
theta0 = np.random.default_rng(1).standard_normal(d)                    # the same start for everyone
STEPS = 50

def run_reference(step, **hp):
    theta, state, path = theta0.copy(), {}, []
    for t in range(1, STEPS + 1):
        g = grad(theta, batches[(t - 1) % len(batches)])
        theta = step(theta, g, state, t, **hp)
        path.append(theta.copy())
    return np.array(path)

X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)                     # float64 tensors

def run_torch(make_optimizer):
    p = torch.nn.Parameter(torch.from_numpy(theta0.copy()))
    opt, path = make_optimizer([p]), []
    for t in range(1, STEPS + 1):
        idx = torch.from_numpy(batches[(t - 1) % len(batches)])
        batch_loss = ((X_t[idx] @ p - y_t[idx]) ** 2).mean()
        opt.zero_grad(); batch_loss.backward(); opt.step()
        path.append(p.detach().numpy().copy())
    return np.array(path)

results = {}
def check(name, step, make_optimizer, **hp):
    ours, theirs = run_reference(step, **hp), run_torch(make_optimizer)
    diff = np.abs(ours - theirs).max()               # over every parameter at every step
    print(f"{name:<9} max |ours − torch| over {STEPS} steps: {diff:.1e}   final loss {loss(ours[-1]):.4f}")
    assert diff < 1e-6, f"{name}: the reference differs from torch by {diff:.3g}"
    results[name] = {"final loss": loss(ours[-1]), "max difference": diff}"""),
    md(r"""### Plain SGD
$$\theta \leftarrow \theta - \alpha g$$"""),
    code("""def sgd(theta, g, state, t, lr):
    return theta - lr * g

check("SGD", sgd, lambda p: torch.optim.SGD(p, lr=0.05), lr=0.05)"""),
    md(r"""### Momentum
Momentum keeps a running "velocity" $v$ (starting at $0$) so that consistent gradient directions build
up speed and oscillating ones cancel. **PyTorch's form** (with the default `dampening=0`):

$$v \leftarrow \mu v + g, \qquad \theta \leftarrow \theta - \alpha v.$$

Many texts write it instead as an **exponential moving average (EMA)**:
$v \leftarrow \beta v + (1-\beta) g$. Unrolled, the EMA velocity is $(1-\beta)\sum_k \beta^{t-k} g_k$,
exactly $(1-\beta)$ times PyTorch's $\sum_k \mu^{t-k} g_k$ when $\beta = \mu$. So the two forms differ
only by a **scale factor**: with $\mu = 0.9$, PyTorch's velocity is $1/(1-\beta) = 10$ times the EMA
velocity, and the EMA form with learning rate $\alpha/(1-\beta)$ follows exactly the same path. Keep this
in mind when you copy a learning rate from a paper that uses the EMA form."""),
    code("""def momentum(theta, g, state, t, lr, mu):
    state["v"] = mu * state.get("v", 0.0) + g           # PyTorch's form
    return theta - lr * state["v"]

def ema_momentum(theta, g, state, t, lr, beta):
    state["v"] = beta * state.get("v", 0.0) + (1 - beta) * g   # the EMA form
    return theta - lr * state["v"]

torch_momentum = lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)
check("momentum", momentum, torch_momentum, lr=0.01, mu=0.9)
# the EMA form matches torch only once its learning rate is scaled by 1/(1 − β)
check("EMA ×10", ema_momentum, torch_momentum, lr=0.01 / (1 - 0.9), beta=0.9)
same_lr = np.abs(run_reference(ema_momentum, lr=0.01, beta=0.9) - run_torch(torch_momentum)).max()
print(f"EMA form with the same lr: max difference {same_lr:.2f} — a different optimizer")
assert same_lr > 1e-3"""),
    md(r"""`torch.optim.SGD` also has a `dampening` argument that multiplies $g$ by $(1 - \text{dampening})$, but
it is not quite the EMA form either: PyTorch starts the buffer at $v_1 = g_1$, undamped, and damps
only later steps.

### Nesterov momentum
Nesterov's method evaluates the gradient at the point momentum is about to carry us to. PyTorch
(`nesterov=True`) uses an equivalent reformulation (its $\theta$ tracks the look-ahead point) that needs
only the gradient at the current parameters:

$$v \leftarrow \mu v + g, \qquad \theta \leftarrow \theta - \alpha\,(g + \mu v).$$"""),
    code("""def nesterov(theta, g, state, t, lr, mu):
    state["v"] = mu * state.get("v", 0.0) + g
    return theta - lr * (g + mu * state["v"])

check("Nesterov", nesterov, lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True), lr=0.01, mu=0.9)"""),
    md(r"""### RMSprop
RMSprop divides each coordinate's step by a running root-mean-square of its gradients, so parameters
with large gradients take smaller steps (squares and roots are element-wise; $s$ starts at $0$):

$$s \leftarrow \rho s + (1-\rho) g^2, \qquad \theta \leftarrow \theta - \alpha \frac{g}{\sqrt{s} + \epsilon}.$$

PyTorch (`torch.optim.RMSprop`, where $\rho$ is called `alpha`) adds $\epsilon$ **outside** the square
root. Some implementations use $\sqrt{s + \epsilon}$ instead; the check below tells the two apart
(with a large $\epsilon = 10^{-3}$ to make the difference visible)."""),
    code("""def rmsprop(theta, g, state, t, lr, rho, eps):
    state["s"] = rho * state.get("s", 0.0) + (1 - rho) * g ** 2
    return theta - lr * g / (np.sqrt(state["s"]) + eps)     # ε outside the square root

def rmsprop_eps_inside(theta, g, state, t, lr, rho, eps):
    state["s"] = rho * state.get("s", 0.0) + (1 - rho) * g ** 2
    return theta - lr * g / np.sqrt(state["s"] + eps)

torch_rmsprop = lambda p: torch.optim.RMSprop(p, lr=0.05, alpha=0.9, eps=1e-3)
check("RMSprop", rmsprop, torch_rmsprop, lr=0.05, rho=0.9, eps=1e-3)
inside = np.abs(run_reference(rmsprop_eps_inside, lr=0.05, rho=0.9, eps=1e-3) - run_torch(torch_rmsprop)).max()
print(f"ε inside the square root: max difference {inside:.1e} — not what torch does")
assert inside > 1e-6"""),
    md(r"""### Adam
Adam combines momentum (a moving average $m$ of the gradient) with RMSprop (a moving average $v$ of
its square). Both start at $0$, so early on they are biased towards $0$; dividing by
$1-\beta^t$ — **$\beta$ to the power $t$**, the step number — removes that bias:

$$m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2,$$
$$\hat m = \frac{m}{1-\beta_1^{\,t}}, \qquad \hat v = \frac{v}{1-\beta_2^{\,t}}, \qquad
\theta \leftarrow \theta - \alpha \frac{\hat m}{\sqrt{\hat v} + \epsilon}.$$

Two mistakes circulate in written explanations:

* one source writes the averages as sums divided by $(1 - \beta t)$ — $\beta$ **times** $t$. For any
  $\beta > \tfrac12$ that denominator is already negative at the second step (table below), which
  would flip the sign of the average;
* another divides only $m$ by its correction and leaves $v$ uncorrected. Early on $v$ is then far too
  small: at the first step $\sqrt{v} = \sqrt{1-\beta_2}\,|g| \approx 0.03\,|g|$, so the step is about
  30 times too large.

The correct form is checked against `torch.optim.Adam` below (defaults $\beta_1 = 0.9$,
$\beta_2 = 0.999$, $\epsilon = 10^{-8}$), and the "only $m$" variant is shown to be a different optimizer."""),
    code("""def adam(theta, g, state, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    g = g + weight_decay * theta                           # Adam's weight_decay: an L2 term in the gradient
    state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * g
    state["v"] = beta2 * state.get("v", 0.0) + (1 - beta2) * g ** 2
    m_hat = state["m"] / (1 - beta1 ** t)                  # bias correction: β to the power t
    v_hat = state["v"] / (1 - beta2 ** t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps)

def adam_only_m_corrected(theta, g, state, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * g
    state["v"] = beta2 * state.get("v", 0.0) + (1 - beta2) * g ** 2
    return theta - lr * (state["m"] / (1 - beta1 ** t)) / (np.sqrt(state["v"]) + eps)

torch_adam = lambda p: torch.optim.Adam(p, lr=0.05)
check("Adam", adam, torch_adam, lr=0.05)
wrong = np.abs(run_reference(adam_only_m_corrected, lr=0.05) - run_torch(torch_adam)).max()
print(f"only m bias-corrected: max difference {wrong:.2f} — not Adam")
assert wrong > 1e-3"""),
    md("The two denominators for $\\beta_1 = 0.9$: the correct one grows towards 1, "
       "the garbled one is negative from step 2."),
    code("""# NBVAL_CHECK_OUTPUT
t = np.arange(1, 11)
pd.DataFrame({"t": t, "1 − β₁ᵗ (correct)": 1 - 0.9 ** t, "1 − β₁·t (garbled)": 1 - 0.9 * t})"""
             """.set_index("t").T.round(3)"""),
    md(r"""### AdamW: decoupled weight decay
**Weight decay** pulls the parameters towards zero to regularise the model. Adam's `weight_decay`
argument does it the L2 way: it adds $\lambda\theta$ to the gradient *before* the adaptive scaling,
so parameters with large gradient history are decayed less. **AdamW** (Loshchilov & Hutter) decouples
the two: it shrinks the parameters directly, then takes a plain Adam step with the unmodified gradient:

$$\theta \leftarrow \theta - \alpha\lambda\theta, \qquad \text{then the Adam update with } g.$$

In PyTorch the decay is multiplied by the learning rate $\alpha$, as written. With the same $\lambda$ the
two are different optimizers — the check shows both match their PyTorch counterparts and differ
from each other."""),
    code("""def adamw(theta, g, state, t, lr, weight_decay, **adam_hp):
    theta = theta - lr * weight_decay * theta              # decoupled: not part of the gradient
    return adam(theta, g, state, t, lr, **adam_hp)

check("Adam+L2", adam, lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1), lr=0.05, weight_decay=0.1)
check("AdamW", adamw, lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1), lr=0.05, weight_decay=0.1)
l2_vs_w = np.abs(run_reference(adam, lr=0.05, weight_decay=0.1) - run_reference(adamw, lr=0.05, weight_decay=0.1)).max()
print(f"Adam with L2 vs AdamW, same λ: max difference {l2_vs_w:.2f}")
assert l2_vs_w > 1e-3"""),
    md(r"""All references agree with PyTorch to rounding error (about $10^{-16}$). The final losses are
**not** a ranking of the optimizers: each ran 50 steps with one hand-picked learning rate on a tiny
convex problem; on a real network the best choice, and its learning rate, must be found by trying."""),
    code("""summary = pd.DataFrame(results).T
assert (summary["max difference"] < 1e-6).all()
summary"""),
    md(r"""## 3. Choosing the learning rate, then decaying it

The learning rate is often the hyperparameter that matters most, and the direct way to choose it is to
try a few. Train the same digits MLP three times with a constant $\alpha$ of 0.1, 0.01 and 0.001 — the same
initial weights (`torch.manual_seed(0)`) and the same batches (`--seed 0`), three epochs each.
`--quiet` leaves out the dashboards, and `--log-dir` also writes each run to a folder of its own
(here a temporary one)."""),
    code("""import tempfile
from pathlib import Path

log_dir = tempfile.mkdtemp(prefix="bigmodel_nb-runs-")
for name, lr in [("lr_0_1", 0.1), ("lr_0_01", 0.01), ("lr_0_001", 0.001)]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    %train model --data digits --epochs 3 --lr {lr} --seed 0 --quiet --name {name} --log-dir {log_dir}"""),
    md("`%runs` puts every run of the session in one table and overlays their curves (validation solid, training "
       "dotted); in JupyterLab a run picker, a metric menu and a step/time switch redraw the chart."),
    code("%runs"),
    md(r"""Only the config fields that **differ** between the runs get a column — here `lr` — so the table says
what changed. **Best** val loss is the lowest of a run's validations, **last** the final one; a last
above the best means the run had stopped improving by its end. The result is stored as `runs`:
`runs["lr_0_01"]` (or `runs[number]`) is one run's record with its config and history, and
`runs.table()` is a DataFrame — here without the time, samples/s and memory columns, which depend on
the machine:"""),
    code("""table = runs.table().set_index("run")
assert (table["last val accuracy"] > 0.85).all(), table
assert table["best val loss"].idxmin().startswith("lr_0_01 ")   # neither too large nor too small
table[["lr", "best val loss", "last val loss", "best val accuracy", "last val accuracy", "steps"]]"""),
    md("`runs.to_csv(path)` writes every run's curves in long form — one row per logged step and split — for "
       "pandas, a spreadsheet or another plotting tool (`runs.history()` is the same as a DataFrame; "
       "`runs.to_tensorboard(dir)` writes them as TensorBoard event files):"),
    code("""curves = pd.read_csv(runs.to_csv(Path(log_dir) / "runs.csv"))
print(f"{len(curves)} rows · columns: {', '.join(curves.columns)}")
print(curves.groupby(["run", "split"]).size().unstack())"""),
    md(r"""Each `--log-dir` run is a folder `<name>-<time>/`: its config, its history (appended and flushed
row by row, so a kernel that dies loses nothing already logged), CPU and memory samples, TensorBoard
event files and, at the end, the weights and a summary. The folders outlive the kernel: after a
restart, `%runs DIR` lists them next to the new session's runs, and `tensorboard --logdir DIR` plots
them. (`%runs --log-dir DIR` logs every later run of the session there without the option.)"""),
    code("""import shutil

for folder in sorted(Path(log_dir).glob("lr_*")):
    files = sorted("events.out.tfevents.*" if f.name.startswith("events.") else f.name for f in folder.iterdir())
    print(folder.name.split("-")[0], files)
shutil.rmtree(log_dir)                                 # a temporary folder: remove it"""),
    md(r"""### A decaying learning rate

A constant $\alpha$ is a compromise: large enough to make progress early, it keeps the parameters
bouncing around the minimum later (as stochastic gradient descent did in section 1). A **schedule**
changes $\alpha$ as training goes on. `bigmodel_nb` offers these (`--schedule NAME`), each a standard
`torch.optim.lr_scheduler` stepped once per training step — except `constant`, which needs none:

| name | shape |
|---|---|
| `constant` | $\alpha$ throughout (with `--warmup N`, a linear rise to $\alpha$ over N steps first) |
| `step` | $\alpha$, then $\times 0.1$ at 60% and again at 85% of training |
| `cosine` | $\alpha \cdot \tfrac12\bigl(1 + \cos(\pi \cdot \text{progress})\bigr)$, from $\alpha$ down to 0 |
| `warmup-cosine` | a linear **warm-up** over the first 5% (or `--warmup N` steps), then cosine |
| `onecycle` | rises from $\alpha/25$ to $\alpha$ over the first 30%, then anneals far below $\alpha/25$ |
| `plateau` | $\times 0.1$ when the validation loss has not improved for 2 validations """
r"""(driven by the data, so it has no fixed curve) |

Warm-up helps adaptive optimizers like Adam, whose first steps rely on poorly estimated averages.
Here are the curves `make_schedule` produces for 100 steps with a peak learning rate of 0.01:"""),
    code("""import plotly.graph_objects as go
from bigmodel_nb.engine.core.optim import make_schedule

def lr_curve(name, lr=0.01, total_steps=100):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = make_schedule(name, opt, total_steps=total_steps)
    curve = []
    for _ in range(total_steps):
        curve.append(opt.param_groups[0]["lr"])         # the LR the next step will use
        opt.step()
        if schedule is not None:                       # "constant" is no scheduler at all
            schedule.step()
    return curve

curves = {name: lr_curve(name) for name in ["constant", "step", "cosine", "warmup-cosine", "onecycle"]}
fig = go.Figure([go.Scatter(y=curve, name=name, mode="lines") for name, curve in curves.items()])
fig.update_layout(title="Learning-rate schedules (peak 0.01, 100 steps)", xaxis_title="step",
                  yaxis_title="learning rate", height=360, margin=dict(t=50, b=40))
fig.show()"""),
    md("Now train the digits MLP with `onecycle` and a peak learning rate of 0.01 (Adam, the default optimizer). "
       "The dashboard's LR panel shows the schedule as it runs."),
    code("""%%train --data digits --epochs 5 --schedule onecycle --lr 0.01 --seed 0
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))"""),
    md("The train rows record the learning rate each logged step used, so we can check it against the schedule's "
       "curve for the same number of steps, and plot it next to the loss."),
    code("""from plotly.subplots import make_subplots

rows = pd.DataFrame(run.rows("train"))
expected = lr_curve("onecycle", lr=0.01, total_steps=run.total_steps)
assert all(abs(r.lr - expected[r.step - 1]) < 1e-12 for r in rows.itertuples()), "the run's LR is not the schedule's"

fig = make_subplots(specs=[[{"secondary_y": True}]])
fig.add_scatter(x=rows["step"], y=rows["loss"], name="train loss", mode="lines+markers")
fig.add_scatter(x=rows["step"], y=rows["lr"], name="learning rate", mode="lines+markers", secondary_y=True)
fig.update_layout(title="onecycle on digits", xaxis_title="step", height=340, margin=dict(t=50, b=40))
fig.update_yaxes(title_text="loss", secondary_y=False)
fig.update_yaxes(title_text="learning rate", secondary_y=True)
fig.show()

test = run.evaluate("test")
print(f"{run.total_steps} steps · test accuracy {test['accuracy']:.3f}")
assert test["accuracy"] >= 0.93, test"""),
    md(r"""## 4. Paths on a 2-D function: Rosenbrock

A loss over two parameters can be drawn. The **Rosenbrock function**
$f(x, y) = (1-x)^2 + 100\,(y - x^2)^2$ has its minimum at $(1, 1)$ at the bottom of a long, curved,
narrow valley: steep across the valley, nearly flat along it — in miniature, the ill-conditioning that
makes real networks hard to train. `%compare_optimizers --function` runs the real `torch.optim`
optimizers on a 2-element tensor, all from the same start, and draws each path on the contour plot
(drag the slider, or press ▶, to follow them step by step). Each optimizer gets a learning rate that
suits this function (listed in the table)."""),
    code("%compare_optimizers --function rosenbrock --optimizers sgd,momentum,rmsprop,adam --steps 300 --name rosen"),
    code("""# NBVAL_IGNORE_OUTPUT
rosen.table()"""),
    md(r"""**What the picture shows.** Plain gradient descent drops into the valley in a few steps and then
crawls along its floor: the gradient there points mostly *across* the valley, and a learning rate small
enough not to bounce between its walls makes tiny progress *along* it. Momentum accumulates the small,
consistent along-valley component and gets much further with the same learning rate. RMSprop and Adam
rescale each coordinate by its recent gradient size, so the flat direction gets larger steps.

The path is the one our hand-written `adam` from section 2 produces too: fed the analytic gradient of
$f$, it follows `torch.optim.Adam`'s path point for point."""),
    code("""def rosenbrock_grad(p):
    x, y = p
    return np.array([-2 * (1 - x) - 400 * x * (y - x ** 2), 200 * (y - x ** 2)])

theta, state, ours = np.array(rosen.start), {}, [np.array(rosen.start)]
for t in range(1, 301):
    theta = adam(theta, rosenbrock_grad(theta), state, t, lr=rosen.lrs["adam"])
    ours.append(theta)
diff = np.abs(np.array(ours) - rosen.paths["adam"]).max()
print(f"hand-written Adam vs torch.optim.Adam on Rosenbrock, 300 steps: max difference {diff:.1e}")
assert diff < 1e-6
final = rosen.results
assert final["momentum"]["distance"] < final["sgd"]["distance"], "momentum should get further along the valley"
assert not any(r["diverged"] for r in final.values())"""),
    md(r"""A **saddle point** is the other shape that slows training: $f(x, y) = x^2 - y^2$ is flat at the
origin but falls away along $y$. Started almost exactly on the ridge ($y = 0.01$), gradient descent
walks towards the saddle and lingers there, because the gradient that would push it off is tiny;
momentum and the adaptive methods leave sooner. Try other functions (`beale`, `rastrigin`,
`quadratic`), starting points (`--start x,y`) and learning rates (`--lr sgd=0.01,adam=0.1`)."""),
    code("%compare_optimizers --function saddle --optimizers sgd,momentum,adam --steps 150 --name saddle"),
    md(r"""### Your turn: the optimizer playground

`%optimizer_playground` draws the same real `torch.optim` paths with a control for everything that decides
them: a learning-rate slider per optimizer (on a log scale), its momentum $\mu$, Adam's $\beta_1$, $\beta_2$
and $\varepsilon$, RMSprop's $\rho$, the number of steps, the function (and, for the quadratic
$\tfrac12(x^2 + \kappa y^2)$, its **condition number** $\kappa$, the ratio of its steepest to its
shallowest curvature). **Click on the contour** to start every optimizer there; press ▶ or drag `step`
to move a marker along each path, and watch $f$ fall (or not) in the panel on the right. Each change
recomputes every path, under a tenth of a second.

In JupyterLab the controls are live; in a page made from the saved notebook (GitHub, nbviewer) you see the
figure of the settings below. The playground is stored as `playground`: `playground.settings` holds what
you chose and `playground.results` where each optimizer ended, so a cell below can read them. Your own
function works too: `def f(x, y): return ...` with torch operations, then
`%optimizer_playground --function f`."""),
    code("%optimizer_playground --function quadratic --optimizers sgd,momentum --steps 300 --lr 0.02"),
    md(r"""**Questions — answer them by moving the sliders, then check below.**

1. Set momentum's $\mu$ to 0. How does its path compare with SGD's, and why, from the update rule
   $v \leftarrow \mu v + g$?
2. Now raise $\mu$ to 0.95. The path overshoots the minimum at $x = 0$: why does more momentum mean more
   overshoot, and does it still arrive?
3. Raise SGD's learning rate slowly. Somewhere the path stops converging along $y$ and starts to bounce
   outwards. Where, for $\kappa = 20$? (Along $y$ one step multiplies $y$ by $1 - \alpha\kappa$.) Then
   set $\kappa$ to 100: where is the limit now, and what does that do to progress along the shallow $x$?
4. Switch the function to `saddle` and click exactly on the ridge $y = 0$ (left of the saddle). Which
   optimizer escapes? Then click a little off the ridge: which one leaves first, and why does momentum
   help here?"""),
    code("""# The answers, computed with the same engine (a playground of its own, so yours keeps your settings)
import bigmodel_nb

pg = bigmodel_nb.optimizer_playground("quadratic", ["sgd", "momentum"], steps=300, lr=0.02, show=False)
pg.update(options={"momentum": {"momentum": 0.0}})
print("1. μ = 0: momentum's path equals SGD's:", np.allclose(pg.paths["momentum"], pg.paths["sgd"]))
assert np.allclose(pg.paths["momentum"], pg.paths["sgd"])

pg.update(options={"momentum": {"momentum": 0.95}})
x = pg.paths["momentum"][:, 0]
crossings = int((np.diff(np.sign(x)) != 0).sum())
print(f"2. μ = 0.95: x crosses 0 {crossings} times; farthest overshoot x = {x.max():.2f}; "
      f"distance after 300 steps {pg.results['momentum']['distance']:.2g}")
assert crossings >= 3 and pg.results["momentum"]["distance"] < 0.1

for kappa in (20, 100):
    limit = 2 / kappa
    below = pg.update(condition=kappa, lrs={"sgd": 0.95 * limit}).results["sgd"]["distance"]
    above = pg.update(lrs={"sgd": 1.05 * limit}).results["sgd"]["distance"]
    print(f"3. κ = {kappa}: lr 0.95·2/κ = {0.95 * limit:.3g} ends {below:.2g} from the minimum; "
          f"1.05·2/κ = {1.05 * limit:.3g} ends {above:.3g} away")
    assert below < 1.5 < above  # |1 − ακ| > 1 above 2/κ: each step moves y further out

pg = bigmodel_nb.optimizer_playground("saddle", ["sgd", "momentum", "adam"], steps=150, show=False)
escape = {}
for y0 in (0.0, 0.01):
    pg.update(start=(-2.0, y0))
    escape[y0] = {n: int(np.argmax(np.abs(p[:, 1]) > 1)) if (np.abs(p[:, 1]) > 1).any() else None
                  for n, p in pg.paths.items()}
    print(f"4. start (-2, {y0}): the step at which |y| passes 1 (None: never) —", escape[y0])
assert all(step is None for step in escape[0.0].values())  # on the ridge nothing leaves
assert escape[0.01]["adam"] < escape[0.01]["momentum"] and escape[0.01]["sgd"] is None"""),
    md(r"""Question 3 is the whole story of ill-conditioning: the steep direction caps the learning rate at
$2/\kappa$, and at that rate the shallow direction (curvature 1) shrinks by only $1 - 2/\kappa$ per step — at
$\kappa = 100$, 2 % per step, so SGD is still 0.01 away after 300 steps where at $\kappa = 20$ it had long
arrived. Momentum and the adaptive methods are answers to exactly this.

On the ridge itself ($y = 0$) the gradient has no $y$ component at all, so no optimizer ever
leaves: every path walks into the saddle point and stays there (try it: the distance column goes to 0). A
hair off the ridge, the $y$ component grows by a factor $(1 + 2\alpha)$ per plain step; momentum
accumulates it and leaves sooner, and Adam, which divides by the gradient's own size, takes full-sized
steps along $y$ at once. Real networks have vast numbers of such flat directions, which is one reason
momentum and adaptive methods train faster."""),
    md(r"""## 5. The same comparison on a real network

Pictures in 2-D build intuition, but a network has thousands of parameters. `%%compare_optimizers`
trains one copy of a model per optimizer — **the same initial weights and the same mini-batches in
the same order** for every copy, so the only difference is the update rule — and overlays their
curves while they train (train loss per logged step, validation loss and accuracy per epoch). The
cell's body defines the model; `--seed` makes both its initial weights and the batch order
reproducible. Small models train as one stacked batch of copies, which is faster than one after
another.

Learning rates matter as much as the rule: the defaults here are common starting points
(SGD 0.05, momentum 0.01, RMSprop 0.001, Adam 0.001, AdamW 0.001 with weight decay 0.01); """
r"""`--lr auto` instead runs a short LR
range test (section 6) for each optimizer first."""),
    code("%%compare_optimizers --data digits --optimizers sgd,momentum,rmsprop,adam,adamw --epochs 5 --seed 0 "
         """--target 0.3
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))"""),
    md("The result (stored as `comparison`) has one row per optimizer: the final losses, the validation accuracy, "
       "the best epoch, how many steps it took to reach the `--target` loss, and whether it diverged."),
    code("""# NBVAL_IGNORE_OUTPUT
comparison.table()"""),
    code("""print(comparison.fair)
table = comparison.table()
assert comparison.fair["same_initial_weights"] and comparison.fair["same_batches"]
assert (table["val_accuracy"] > 0.85).all(), table["val_accuracy"]"""),
    md(r"""**Fair, and checked.** Because every copy starts from the same weights and sees the same batches,
each curve is exactly what a plain `%%train` with that optimizer would give. Train SGD on its own
with the same seed and learning rate and compare its logged losses with the comparison's SGD curve:"""),
    code("%%train --data digits --epochs 5 --seed 0 --optimizer sgd --lr {comparison.results['sgd']['lr']} "
         """--name sgd_alone
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))"""),
    code("""alone = [r["loss"] for r in sgd_alone.rows("train")]
together = [r["loss"] for r in comparison.rows("sgd")]
gap = np.abs(np.array(alone) - np.array(together)).max()
print(f"{len(alone)} logged losses; largest difference between %%train and the comparison: {gap:.1e}")
assert len(alone) == len(together) and gap < 1e-4"""),
    md(r"""The differences are rounding: the comparison multiplies the stacked copies' weights in one batched
matrix product, which sums in a different order than one model's product.

**What a comparison like this does not tell you.** Five epochs with one learning rate each is a
snapshot: a rule that is behind at epoch 5 may win with a better learning rate, a schedule, or more
time, and the ranking can change with the model and data. Compare at tuned learning rates
(`--lr auto`, or your own sweep) before drawing conclusions."""),
    md(r"""## 6. The learning-rate range test

Which peak learning rate to use? The **LR range test** (L. Smith, 2015) trains for a short while with
an exponentially rising learning rate — here from $10^{-7}$ to $10$ over 100 batches, one LR each —
and records the smoothed loss. `%lr_find` stores the result as `lr_finder` (`.lrs`, `.losses`,
`.suggestion`) and **restores the model's weights** afterwards, so the same model can then be trained
from its initial state."""),
    code("""torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
initial = {k: v.clone() for k, v in model.state_dict().items()}"""),
    code("%lr_find model --data digits"),
    code("""print(lr_finder)
print(f"{len(lr_finder.lrs)} LRs from {lr_finder.lrs[0]:.0e} to {lr_finder.lrs[-1]:.2g}; "
      f"suggestion {lr_finder.suggestion:.2g}")
assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items()), "weights not restored"
assert lr_finder.lrs[0] < lr_finder.suggestion < lr_finder.lrs[-1]"""),
    md(r"""**What the curve shows.** At tiny learning rates the loss barely moves; then it starts to fall, falls
fastest over a range, reaches a minimum and finally explodes when steps become too large (the sweep
stops there). The suggestion is the LR where the smoothed loss **falls fastest** — below the minimum,
where training is quick but still stable.

**What it does not guarantee.** Every point is measured after only a few batches, with weights that
were trained at all the smaller LRs before it, so the curve describes the *start* of training, not
the best LR for a long run, and it says nothing about generalisation. It also depends on the optimizer
and batch size (change either and rerun it), and a suggestion is a starting point to try, not a
tuned value. Here we train the same model (back at its initial weights) with the suggested LR;
IPython replaces `{lr_finder.suggestion}` in a magic's line with its value."""),
    code("""%train model --data digits --epochs 5 --lr {lr_finder.suggestion} --seed 0 --name found_run"""),
    code("""found = found_run.evaluate("test")
print(f"lr {found_run.config.lr:.2g} · test accuracy {found['accuracy']:.3f}")
assert found_run.config.lr == lr_finder.suggestion
assert found["accuracy"] >= 0.93, found"""),
    md(r"""## 7. Searching two hyperparameters at once: `%%sweep`

Three learning rates were easy to try by hand; the learning rate *and* the width of the hidden layer
together are a grid that grows fast. `%%sweep` searches it with [Optuna](https://optuna.org): a flag given
as a range `lo..hi` (`:log` for a log scale) or as choices `a,b,c` is searched, and a flag that `%%train`
does not know — here `--hidden` — becomes a variable of the cell body, which runs again for every trial.
Optuna's TPE sampler proposes each trial's values from the trials so far (it models which values gave
good and bad validation losses), and the **median pruner** stops a trial at a validation where its loss
is worse than the median of the earlier trials at that step: bad trials cost one epoch, not three."""),
    code("""%%sweep --trials 12 --seed 0 --data digits --epochs 3 --lr 1e-4..1e-1:log --hidden 16,32,64,128
model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))"""),
    md(r"""**Reading the parallel coordinates.** Each line is one finished trial, crossing the axes at its learning
rate (log scale), its width and its validation loss; its colour is the loss, darkest for the best. Follow
the dark lines back to the learning-rate axis to see the range that works, and look at how they spread
on the width axis to see how much the width matters here. The best-so-far curve on the right shows how
quickly the search found a good trial. The result is stored as `sweep`:"""),
    code("""print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in sweep.best["params"].items()},
      f"val loss {sweep.best['value']:.4f}")
print(sweep.table()["state"].value_counts().to_dict())
assert 1e-3 <= sweep.best["params"]["lr"] <= 1e-1, sweep.best
assert sweep.best["value"] == min(t["value"] for t in sweep.trials if t["state"] == "complete")"""),
]


execute_and_write(cells, "02_optimizers.ipynb")
