"""Writes notebooks/07_scaling.ipynb (the source of truth for its cells), then executes it headless
so the stored outputs are real. Run: .venv/bin/python tools/make_scaling_nb.py"""
from notebook_writer import code, execute_and_write, md

cells = [
    md(r"""# Scaling up: memory, mixed precision, accumulation, and training on several workers

"Big model" work runs out of one resource after another: memory first, then time, then one machine.
This tutorial measures each step on a small model you can run anywhere:

1. **how big is big** — `%summary` of growing GPT configurations, and what their activations are made of;
2. **mixed precision** — what bf16 does to the memory a training step keeps;
3. **gradient accumulation** — a big batch out of small ones, checked equal;
4. **activation checkpointing** — trading compute for memory, measured;
5. the same `%%train` on **two Ray Train workers** — and checked against one process."""),
    code("%load_ext bigmodel_nb"),
    code("""import torch
from torch import nn

from bigmodel_nb.engine.inspect.summary import summarize
from bigmodel_nb.models import GPT, GPTConfig"""),
    md(r"""## 1. How big is big

Training memory is weights + gradients + optimizer state + the activations kept for the backward
pass. With Adam in fp32 the first three cost $4 + 4 + 8 = 16$ bytes per parameter (in bf16 mixed
precision $2 + 2 + 12$: `04_transformers` explains the fp32 master copy). Activations grow with the
batch and the context. Built on the `meta` device, a model has shapes but no storage, so `summarize`
(the engine of `%summary`) can size models far larger than any laptop. `device="cpu"` makes the
estimate the same on every machine (on a GPU the optimizer's temporaries are counted differently)."""),
    code("""import pandas as pd

configs = {"4 layers × 128": (4, 4, 128), "GPT-2 small": (12, 12, 768), "GPT-2 medium": (24, 16, 1024),
           "GPT-2 large": (36, 20, 1280), "GPT-2 XL": (48, 25, 1600)}
B, T, V = 8, 1024, 50257                      # batch, context (tokens per sequence), vocabulary
summaries, rows = {}, []
for name, (layers, heads, width) in configs.items():
    with torch.device("meta"):
        model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=layers, n_head=heads, n_embd=width))
    s = summaries[name] = summarize(model, (T,), batch_size=B, device="cpu")
    fp32, bf16 = s.estimate(), s.estimate(precision="bf16")
    rows.append({"model": name, "params (M)": s.total_params / 1e6, "train fp32 (GiB)": fp32["total_bytes"] / 2**30,
                 "train bf16 (GiB)": bf16["total_bytes"] / 2**30,
                 "activations fp32 (GiB)": fp32["activations"] / 2**30})
sizes = pd.DataFrame(rows).set_index("model").round(2)
print(f"batch {B} × {T:,} tokens, Adam")
sizes"""),
    code("""assert sizes["params (M)"].is_monotonic_increasing and sizes["train fp32 (GiB)"].is_monotonic_increasing
assert 120 < sizes.loc["GPT-2 small", "params (M)"] < 130 and 1500 < sizes.loc["GPT-2 XL", "params (M)"] < 1600
assert (sizes["train bf16 (GiB)"] < sizes["train fp32 (GiB)"]).all()"""),
    md(r"""Whether one of these fits is a property of the machine, not of the model: `s.estimate()["fits"]`
compares the total with the free memory of the machine running the cell (and `%summary` prints it). It
is left out of the stored table because it differs from one machine to the next.

**What the activations are.** For this GPT (width $C$, $L$ layers, $h$ heads, vocabulary $V$), the
floating-point numbers autograd keeps for backward, per token, are

$$\underbrace{L\,(16C + h + 4)}_{\text{blocks}} \;+\; \underbrace{2C + 2}_{\text{final norm, head input}}
\;+\; \underbrace{V}_{\text{logits}}$$

— per block the inputs of its LayerNorms and matrix products ($C$ each), $q, k, v$ ($3C$), the attention
output ($C$) and the MLP's two $4C$ tensors, plus one log-sum-exp per head and a mean and $1/\text{std}$
per LayerNorm; and once, the **log-probabilities** of the loss over the vocabulary. Times $B \cdot T$
tokens and the bytes per number, plus the token ids and targets (two int64 per token, 16 bytes) and, once
per batch, the $T$ positions (int64) and the loss itself. On top,
the backward pass holds the logits and their gradient at once — two more $B \cdot T \cdot V$ tensors,
counted under *workspace*. So the logits cost $3 \cdot B \cdot T \cdot V$ numbers in all. With
$V = 50{,}257$ and $C = 128$ the $V$ term is six times all four blocks together: for the small models
in the table **the logits dominate** (GPT-2 small is the first whose blocks outweigh them). The
cell checks the formula against the estimator for every model, in fp32 and bf16."""),
    code("""def activations_by_formula(layers, heads, width, bytes_per_number):
    per_token = layers * (16 * width + heads + 4) + 2 * width + 2 + V
    # + int64 token ids and targets per token; once per batch the T positions (int64) and the loss (one number)
    return B * T * (per_token * bytes_per_number + 16) + 8 * T + bytes_per_number

rows = []
for name, (layers, heads, width) in configs.items():
    s = summaries[name]
    for precision, nbytes in (("fp32", 4), ("bf16", 2)):
        e = s.estimate(precision=precision)
        formula = activations_by_formula(layers, heads, width, nbytes)
        logits_workspace = 2 * B * T * V * nbytes                # the logits and their gradient, during backward
        assert formula == e["activations"], (name, precision, formula, e["activations"])
        assert e["workspace"] == logits_workspace, (name, precision)
        if precision == "fp32":
            rows.append({"model": name, "formula (GiB)": formula / 2**30, "estimator (GiB)": e["activations"] / 2**30,
                         "logits share": B * T * V * nbytes / formula})
check = pd.DataFrame(rows).set_index("model").round(3)
assert check.loc["4 layers × 128", "logits share"] > 0.8 and check.loc["GPT-2 XL", "logits share"] < 0.2
check"""),
    md(r"""## 2. Mixed precision: what a step keeps for backward

Under `torch.autocast(dtype=torch.bfloat16)` matrix multiplications run in bf16 (2 bytes per number
instead of 4), and the activations they save for the backward pass are bf16 too; the weights and the
optimizer stay fp32, so accuracy is kept. `%%train --amp bf16` does this. On a GPU with tensor cores
bf16 is also several times faster; on this CPU it may well be slower — speed is a GPU story, memory is
not. Below, autograd's own saved-tensor hook counts the bytes a real training step of a small GPT keeps."""),
    code("""def saved_bytes(model, idx, targets, **autocast):
    kept = [0]

    def pack(t):  # every tensor autograd keeps for the backward pass
        kept[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", **autocast):
        loss = model(idx, targets)[1]
    loss.backward()
    return kept[0]

torch.manual_seed(0)
gpt = GPT(GPTConfig(vocab_size=96, block_size=128, n_layer=4, n_head=4, n_embd=128))
idx, targets = torch.randint(0, 96, (16, 128)), torch.randint(0, 96, (16, 128))
fp32 = saved_bytes(gpt, idx, targets, enabled=False)
bf16 = saved_bytes(gpt, idx, targets, dtype=torch.bfloat16)
print(f"saved for backward: fp32 {fp32 / 2**20:.1f} MiB, bf16 autocast {bf16 / 2**20:.1f} MiB ({bf16 / fp32:.0%})")
assert bf16 < 0.8 * fp32"""),
    md(r"""## 3. Gradient accumulation: a big batch from small ones

When a batch of $B$ does not fit, run $N$ micro-batches of $B/N$, add up their gradients, and step
once. With each micro-batch's mean loss weighted by its share of the samples, the summed gradient *is*
the big batch's gradient: `%%train --accumulate 4 --batch-size 16` follows the same trajectory as
`--batch-size 64`, with a quarter of the activation memory."""),
    code("""%%train --data digits --epochs 3 --batch-size 64 --optimizer sgd --lr 0.1 --seed 0 --name big_batch --quiet
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))"""),
    code("%%train --data digits --epochs 3 --batch-size 16 --accumulate 4 --optimizer sgd --lr 0.1 --seed 0 "
         """--name accumulated --quiet
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))"""),
    code("""gap = max(abs(a["loss"] - b["loss"]) for a, b in zip(big_batch.rows("train"), accumulated.rows("train")))
print(f"{len(big_batch.rows('train'))} logged losses, largest difference {gap:.1e}; "
      f"steps: {big_batch.step} vs {accumulated.step}")
assert gap < 1e-4 and big_batch.step == accumulated.step"""),
    md(r"""## 4. Activation checkpointing: compute for memory

A transformer block keeps its attention scores, MLP activations and norms for the backward pass.
With activation checkpointing only each block's *input* is kept, and the block runs forward again
during backward: about a third more compute, much less memory. `%%train --activation-checkpointing`
turns it on for the zoo's GPT and Transformer (and Hugging Face models); the gradients are the same."""),
    code("""torch.manual_seed(0)
plain = GPT(GPTConfig(vocab_size=96, block_size=128, n_layer=4, n_head=4, n_embd=128))
checkpointed = GPT(GPTConfig(vocab_size=96, block_size=128, n_layer=4, n_head=4, n_embd=128))
checkpointed.load_state_dict(plain.state_dict())
checkpointed.activation_checkpointing = True
full, recomputed = saved_bytes(plain, idx, targets, enabled=False), """
                   """saved_bytes(checkpointed, idx, targets, enabled=False)
grad_gap = max((a.grad - b.grad).abs().max().item() for a, b in zip(plain.parameters(), checkpointed.parameters()))
print(f"saved for backward: {full / 2**20:.1f} MiB → {recomputed / 2**20:.1f} MiB with checkpointing; "
      f"gradients differ by {grad_gap:.1e}")
assert recomputed < 0.5 * full and grad_gap < 1e-5"""),
    md(r"""## 5. Beyond one process: Ray Train

`%%train --workers N` runs the same training on N worker processes through Ray Train (a local Ray
cluster here; `--cluster host:port` for a real one). The model defined in the cell is shipped to the
workers, wrapped in DistributedDataParallel, and each worker takes its slice of every batch: after
each backward pass DDP averages the workers' gradients, so with `--batch-size` as the *global* batch
the run follows the same trajectory as one process. Rank 0 streams its rows back to the notebook while
the workers train, writes a checkpoint each epoch, and a worker that dies is restarted from it.

Starting a local cluster takes a while (tens of seconds on a laptop) — the price of real processes. In a cell this is

```
%%train --data digits --epochs 3 --batch-size 64 --optimizer sgd --lr 0.1 --seed 0 --workers 2 --name on_workers
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
```

and below it is the same through the Python twin, so that the notebook still runs where Ray is not
installed (on Binder, whose 2 GB would not hold a Ray cluster: `pip install 'bigmodel-nb[distributed]'`)."""),
    code("""import importlib.util

import bigmodel_nb

if importlib.util.find_spec("ray") is None:
    on_workers = None
    print("Ray is not installed here: pip install 'bigmodel-nb[distributed]' to run this section.")
else:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    on_workers = bigmodel_nb.train(model, "digits", epochs=3, batch_size=64, optimizer="sgd", lr=0.1, seed=0,
                                   workers=2, name="on_workers", quiet=True)   # quiet: no dashboard here
    print(f"on_workers: {on_workers.status} after {on_workers.step} steps on 2 Ray Train workers")"""),
    code("""if on_workers is not None:
    gap = max(abs(a["loss"] - b["loss"]) for a, b in zip(on_workers.rows("train"), big_batch.rows("train")))
    print(f"2 workers vs 1 process, same global batch: largest loss difference {gap:.1e}; "
          f"test accuracy {on_workers.evaluate('test')['accuracy']:.3f} """
          """vs {big_batch.evaluate('test')['accuracy']:.3f}")
    assert on_workers.status == "completed" and gap < 1e-4

    import ray

    ray.shutdown()  # stop the local cluster and free its memory"""),
    md(r"""**Where to go from here.** On a GPU, `%%train --amp bf16 --compile` adds tensor-core speed and
kernel fusion (the dashboard then shows tokens/s and the model FLOP utilisation); `bench/gpu.py`
measures a GPT-2-small-sized model that way against the hand-written loop. With several GPUs per
machine, `--workers N --gpus-per-worker 1`; for models whose weights and optimizer state do not fit
one GPU, `--strategy fsdp` shards them across the workers."""),
]


execute_and_write(cells, "07_scaling.ipynb")
