"""Writes notebooks/04_transformers.ipynb (the source of truth for its cells), then executes it
headless so the stored outputs are real. Run: .venv/bin/python tools/make_transformers_nb.py"""
from notebook_writer import code, execute_and_write, md

cells = [
    md(r"""# Transformers: self-attention, a small GPT, and what attention maps show

This tutorial:

1. writes **self-attention** out — $\mathrm{Attention}(Q, K, V) = \mathrm{softmax}(QK^\top/\sqrt{d_k})\,V$ —
   and checks it against PyTorch's `F.scaled_dot_product_attention`, with and without a causal mask;
2. splits it into **heads** and checks the result against the zoo's `SelfAttention` layer;
3. trains a small **GPT** (`bigmodel_nb.models.GPT`, nanoGPT-style) on a character-level corpus made from
   the Python standard library's own source — offline, present wherever Python is — and samples text
   from it with temperature and top-k;
4. looks at its **attention maps** with `%attention`;
5. estimates the size and training memory of a **GPT-2-small-sized** model with `%summary`, without
   allocating it."""),
    code("%load_ext bigmodel_nb"),
    code("""import math

import torch
import torch.nn.functional as F
from torch import nn

from bigmodel_nb.models import GPT, GPTConfig, SelfAttention"""),
    md(r"""## 1. Self-attention, written out

Each token $i$ of a sequence $x_1, \dots, x_T$ (vectors of size $C$) is projected three ways: a **query**
$q_i = x_i W_Q$ ("what am I looking for?"), a **key** $k_j = x_j W_K$ ("what do I contain?") and a
**value** $v_j = x_j W_V$ ("what do I pass on?"). Token $i$ scores every token $j$ by $q_i \cdot k_j$,
scaled by $1/\sqrt{d_k}$ so the scores do not grow with the dimension (large scores would saturate the
softmax and kill its gradient), turns the scores into weights that sum to 1 with a softmax over $j$,
and outputs the weighted average of the values:

$$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V.$$

In a **decoder** (GPT) token $i$ may only look at tokens $j \le i$ — it must not see the future it is
trained to predict — so scores above the diagonal are set to $-\infty$ before the softmax (a **causal
mask**). An **encoder** (BERT, a classifier) lets every token see every other."""),
    code("""torch.manual_seed(0)
T, C = 6, 16
x = torch.randn(T, C)
W_q, W_k, W_v = (torch.randn(C, C) / math.sqrt(C) for _ in range(3))

Q, K, V = x @ W_q, x @ W_k, x @ W_v
weights = torch.softmax(Q @ K.T / math.sqrt(C), dim=-1)      # [T, T], each row sums to 1
out = weights @ V

future = torch.ones(T, T, dtype=torch.bool).triu(1)           # True above the diagonal
causal_weights = torch.softmax((Q @ K.T / math.sqrt(C)).masked_fill(future, float("-inf")), dim=-1)
causal_out = causal_weights @ V

full_gap = (out - F.scaled_dot_product_attention(Q, K, V)).abs().max()
causal_gap = (causal_out - F.scaled_dot_product_attention(Q, K, V, is_causal=True)).abs().max()
print(f"by hand vs F.scaled_dot_product_attention: {full_gap:.1e} (full), {causal_gap:.1e} (causal)")
assert full_gap < 1e-6 and causal_gap < 1e-6
assert torch.allclose(weights.sum(-1), torch.ones(T)) and (causal_weights[future] == 0).all()
print("causal weights (row i = token i attending):")
print(causal_weights.numpy().round(2))"""),
    md(r"""The first row puts all its weight on token 1: with the mask, the first token can only attend to itself.

## 2. Multi-head attention

One softmax gives each token one way of mixing the others. **Multi-head attention** runs $h$ attentions
side by side on slices of size $d_k = C/h$ — one head may follow the previous token, another the
matching bracket — concatenates their outputs and mixes them with an output projection $W_O$. The zoo's
`SelfAttention` computes $Q, K, V$ for all heads in one matrix product (`qkv`) and, normally, calls the
fused `F.scaled_dot_product_attention`, which never materialises the weights. Its `capture` switch
makes it compute them explicitly, which is what `%attention` uses. Both paths agree with our formula:"""),
    code("""torch.manual_seed(0)
layer = SelfAttention(n_embd=C, n_head=4, causal=True)
h, d_k = layer.n_head, C // layer.n_head
xb = x[None]                                                   # a batch of one sequence

q, k, v = layer.qkv(xb).split(C, dim=-1)
heads = lambda t: t.view(1, T, h, d_k).transpose(1, 2)        # [1, T, C] -> [1, h, T, d_k]
att = (heads(q) @ heads(k).transpose(-2, -1) / math.sqrt(d_k)).masked_fill(future, float("-inf")).softmax(-1)
by_hand = layer.proj((att @ heads(v)).transpose(1, 2).reshape(1, T, C))

fused = layer(xb)                                              # the fast path
layer.capture = True
captured = layer(xb)                                           # the explicit path, weights kept
layer.capture = False
print(f"max differences: fused {(by_hand - fused).abs().max():.1e}, explicit {(by_hand - captured).abs().max():.1e}, "
      f"weights {(att - layer.attention).abs().max():.1e}")
assert torch.allclose(by_hand, fused, atol=1e-6) and torch.allclose(att, layer.attention, atol=1e-6)"""),
    md(r"""## 3. A small GPT on Python source

A language model assigns a probability to a sequence by the chain rule,
$P(x_1, \dots, x_T) = \prod_i P(x_i \mid x_{<i})$, and GPT is trained on exactly that: at **every**
position it predicts the **next token**, with the cross-entropy of the true next token as the loss.
(Written explanations sometimes describe GPT's pre-training as "next-sentence prediction and
fill-in-the-blank": those are BERT's tasks. GPT only ever predicts the next token.)

Our tokens are characters. `python-stdlib` is built from the standard library's `.py` files of the
running interpreter: 1,000,000 characters, printable ASCII plus newline (96 symbols), cut into windows
of 64 characters where the target is the input shifted by one. Validation and test are separate
stretches of the corpus, so no window overlaps the training text."""),
    code("""from bigmodel_nb import load_dataset

corpus = load_dataset("python-stdlib")
tokenizer = corpus.info["tokenizer"]
x0, y0 = corpus.train.tensors()[0][0], corpus.train.tensors()[1][0]
print(corpus)
print(repr(tokenizer.decode(x0[:40])))
print(repr(tokenizer.decode(y0[:40])), "← the same text, one character later")
assert torch.equal(x0[1:], y0[:-1])"""),
    md(r"""Before training, every one of the 96 characters is about equally likely, so the loss starts near
$\ln 96 \approx 4.56$ nats per character. The model below has two blocks of four heads (≈100k parameters); the
`--seed` makes its initial weights and the batch order reproducible. It returns `(logits, loss)`, so
`%%train` uses its own loss."""),
    code("%%train --data python-stdlib --steps 1000 --batch-size 32 --lr 3e-3 --schedule warmup-cosine --warmup 50 "
         """--val-every 200 --seed 0
model = GPT(GPTConfig(vocab_size=len(corpus.vocab), block_size=64, n_layer=2, n_head=4, n_embd=64))"""),
    code("""val = [r["loss"] for r in run.history if r["split"] == "val"]
print(f"{model.num_params():,} parameters · val loss {val[0]:.2f} → {val[-1]:.2f} nats/char """
      """(ln 96 = {math.log(96):.2f})")
assert run.status == "completed" and val[-1] < 1.9 < math.log(96)"""),
    md(r"""**Two parameter counts.** The line `%%train` printed when the run started counts every parameter the
optimizer updates; `model.num_params()` above leaves out the **position embedding**, as nanoGPT (and the
GPT-2 paper's model sizes) do. The position embedding is a table of one learned vector per position:
`block_size × n_embd` $= 64 \times 64 = 4{,}096$ numbers. The token embedding is not subtracted: its
matrix is tied to the output layer, so it also serves as the language-model head."""),
    code("""everything = sum(p.numel() for p in model.parameters())          # what %%train reports and trains
positions = model.position_embedding.weight.numel()                 # block_size × n_embd
print(f"all parameters {everything:,} = num_params() {model.num_params():,} + position embedding "
      f"{positions:,} ({model.config.block_size} positions × {model.config.n_embd})")
assert positions == model.config.block_size * model.config.n_embd == 4096
assert model.num_params() == everything - positions and model.num_params(non_embedding=False) == everything
assert model.lm_head.weight is model.token_embedding.weight          # tied: counted once"""),
    md(r"""**Sampling.** `generate` feeds the model its own output one character at a time. The **temperature**
divides the logits before the softmax: below 1 it sharpens the distribution (safer, more repetitive
text), above 1 it flattens it (more surprising, more mistakes); 0 always takes the most likely
character. **top-k** samples only among the $k$ likeliest characters, cutting off the long tail of
unlikely ones. After a few hundred steps the text is not valid Python, but it has Python's shape:
indentation, `def`, `self.`, colons and parentheses."""),
    code("""# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
prompt = tokenizer.encode("    def ")
for temperature, top_k in [(0.8, 10), (1.2, None)]:
    text = tokenizer.decode(model.generate(prompt, max_new_tokens=200, temperature=temperature, top_k=top_k))
    print(f"--- temperature {temperature}, top_k {top_k} ---\\n{text}\\n")"""),
    code("""torch.manual_seed(0)
sample = tokenizer.decode(model.generate(prompt, max_new_tokens=400, temperature=0.8, top_k=10))
python_shape = sum(marker in sample for marker in ["self", "(", ")", ":", "\\n    ", "=", "return", "if "])
print(f"{python_shape} of 8 Python markers in the sample")
assert python_shape >= 5"""),
    md(r"""## 4. Attention maps

`%attention MODEL INPUT` runs one forward pass with the weights captured and draws them: rows are the
token attending (the query), columns the token attended to (the key). The dropdown switches between
layers and heads; below it, every head of the layer side by side. The text is tokenised with the
vocabulary of the dataset the model was trained on (here found from `run`; `--data` or `--tokenizer`
say it explicitly). The result is stored as `attention_maps`."""),
    code('%attention model "    def __init__(self, name):\\n        self.name = name" --layer 1'),
    code("""w = attention_maps.weights(1)                    # [heads, T, T]
T = len(attention_maps.tokens)
print(attention_maps, "·", "".join(attention_maps.tokens))
assert torch.allclose(w.sum(-1), torch.ones(4, T), atol=1e-5)                   # each row is a distribution
assert (w.triu(1) == 0).all()                                                   # nothing looks ahead
# The captured weights are the ones the model really used: recompute layer 1's by hand from its input.
ids = tokenizer.encode("    def __init__(self, name):\\n        self.name = name")[None]
with torch.no_grad():
    h = model.drop(model.token_embedding(ids) + model.position_embedding(torch.arange(ids.shape[1])))
    h = model.blocks[0](h)
    attn = model.blocks[1].attn
    q, k, _ = attn.qkv(model.blocks[1].ln_1(h)).split(64, dim=-1)
    q, k = (t.view(1, -1, 4, 16).transpose(1, 2) for t in (q, k))
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    expected = (q @ k.transpose(-2, -1) / 4).masked_fill(mask, float("-inf")).softmax(-1)[0]
assert torch.allclose(w, expected, atol=1e-5)"""),
    md(r"""**What attention maps show, and what they do not.** A map shows where each token took its
information from in one layer and head, for this input: heads that always look one character back,
heads that look at the start of the line or at the last `(`. It does **not** show *why* the model
predicts what it does: the values that are mixed, the feed-forward layers, the other heads and the
residual stream all contribute, and attention weights can be changed substantially without changing the
prediction. Treat a map as a clue to test (e.g. by ablating the head), not as an explanation.

## 5. How big is a real GPT? `%summary`

GPT-2 small has 12 layers of 12 heads, $C = 768$, a 1,024-token context and a 50,257-token vocabulary.
Built on PyTorch's `meta` device it has shapes but no storage, so `%summary` can count it, run its
forward for the layer shapes and FLOPs, and estimate training memory without allocating a byte of
weights. Training memory is weights + gradients + optimizer state (Adam keeps two fp32 numbers per
parameter) + the activations saved for the backward pass, which grow with the batch size and the
context."""),
    code("""with torch.device("meta"):
    gpt2_small = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768))"""),
    md(r"""The last line of the summary ("fits on …, … available") compares the estimate with the free memory
of the machine that ran the cell — the stored output is the machine that built this notebook; run it to
see yours. Everything above that line is the same on any CPU."""),
    code("# NBVAL_IGNORE_OUTPUT\n%summary gpt2_small --batch-size 8 --input-shape 1024"),
    code("""import pandas as pd

rows = []
for precision in ["fp32", "bf16", "fp16", "int8"]:
    e = model_summary.estimate(batch_size=8, precision=precision)
    rows.append({"precision": precision, **{k: e[k] / 2**30 for k in
                 ["weights", "gradients", "optimizer_state", "activations", "workspace", "total_bytes"]}})
table = pd.DataFrame(rows).set_index("precision").round(2)
print(f"{model_summary.total_params / 1e6:.1f}M parameters (tied embeddings counted once); """
      """GiB per component, batch 8 × 1,024 tokens:")
table"""),
    code("""assert model_summary.total_params == sum(p.numel() for p in gpt2_small.parameters())
assert 120e6 < model_summary.total_params < 130e6
assert table.loc["bf16", "weights"] == table.loc["fp32", "weights"] / 2
assert table.loc["int8", "gradients"] == table.loc["int8", "optimizer_state"] == 0   # inference: nothing to train
assert table.loc["int8", "activations"] < table.loc["bf16", "activations"]           # no graph kept for backward"""),
    md(r"""**Bytes per parameter.** In fp32 with Adam each trainable parameter costs 4 bytes of weight, 4 of
gradient and 8 of optimizer state (Adam's running mean $m$ and running square $v$, 4 bytes each): 16 bytes.
In **bf16** mixed precision the weights and gradients the model computes with are 2 bytes each, but the
optimizer state grows to **12 bytes**: Adam updates an **fp32 master copy** of the weights (4 bytes) —
bf16 has only 8 bits of mantissa, so a small update $\alpha\,\hat m/\sqrt{\hat v}$ added to a bf16 weight
would often round away to nothing — and keeps $m$ and $v$ in fp32 (4 + 4). So $2 + 2 + 12 = 16$ bytes,
the same as fp32: mixed precision saves activation memory and time, not parameter memory. The cell
checks this against the estimator's numbers."""),
    code("""n = model_summary.trainable_params
fp32, bf16 = (model_summary.estimate(batch_size=8, precision=p) for p in ("fp32", "bf16"))
per_param = {name: {k: e[k] / n for k in ("weights", "gradients", "optimizer_state")} for name, e in
             (("fp32", fp32), ("bf16", bf16))}
print("bytes per trainable parameter:")
print(pd.DataFrame(per_param).T.round(3))
assert fp32["gradients"] == 4 * n and fp32["optimizer_state"] == (4 + 4) * n          # Adam: m and v
assert bf16["gradients"] == 2 * n and bf16["optimizer_state"] == (4 + 4 + 4) * n      # master copy + m + v
assert fp32["weights"] == 4 * n and bf16["weights"] == 2 * n                           # GPT has no buffers
assert fp32["weights"] + fp32["gradients"] + fp32["optimizer_state"] == \\
       bf16["weights"] + bf16["gradients"] + bf16["optimizer_state"] == 16 * n"""),
    md(r"""Three lessons from the table. The parameters are the smaller part: with Adam, weights, gradients and
optimizer state take 16 bytes per parameter in fp32 or bf16 alike (about 2 GB here), and the saved
activations of a batch of 8 full-length sequences are larger still — which is why big models train with
**mixed precision** (bf16 activations), **gradient accumulation** (smaller batches, summed gradients),
**activation checkpointing** (recompute instead of store) and, beyond one device, sharded data
parallelism. Second, a large share of those activations is the **logits**: batch × context × vocabulary
$= 8 \times 1024 \times 50{,}257$ numbers, kept with their softmax for the loss (`07_scaling` writes the
formula out). Third, int8 is a storage and **inference** format here: nobody trains in it, so its row has
no gradients and no optimizer state, and nothing is kept for a backward pass — its activations are only
the working set of one layer's input and output, in fp32, because int8 weight quantization stores the
weights in int8 but computes (and outputs) activations in floating point. (`workspace` is memory that
lives only during a training step: the optimizer's temporaries and gradient buffers being filled during
the backward pass.)"""),
]


execute_and_write(cells, "04_transformers.ipynb")
