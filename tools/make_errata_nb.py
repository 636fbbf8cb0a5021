"""Writes notebooks/09_what_the_sources_got_wrong.ipynb (the source of truth for its cells), then executes
it headless so the stored outputs are real. Run: .venv/bin/python tools/make_errata_nb.py"""
from notebook_writer import code, execute_and_write, md

cells = [
    md(r"""# What the sources got wrong

These tutorials grew out of a set of introductory articles on big models. Most of what they say is
taught, and checked, in notebooks 01–08; a few claims are wrong. Each section below states what a
source said, what is true, and — where code can show it — a cell that shows it and asserts it.
(The mistakes in the sources' pruning, quantization and distillation code are shown in
`05_compression`.)

1. Adam's second moment is built from $m^2$ — it is built from the squared gradient $g^2$.
2. Binary cross-entropy written $-y \log p + (1 - y)\log(1 - p)$ — the minus sign covers both terms:
   $-[y \log p + (1 - y)\log(1 - p)]$.
3. Random initialisation "avoids overfitting" — it breaks the symmetry between units.
4. Hinton et al. 2006 "at NIPS", BERT "doing speech recognition in 2014" — *Science* and *Neural
   Computation* 2006; BERT is a 2018 language model; GPT-2 is from 2019.
5. Zero-, one- and few-shot "are fine-tuning methods" — they use a pretrained model as it is, with no or
   a few examples in the input.
6. A decoder "is an encoder plus attention" — a decoder block has *causal* self-attention (plus
   cross-attention in an encoder–decoder model).
7. "Data size is proportional to performance" — performance grows roughly as a power law, with
   diminishing returns.
8. An MNIST log (60000/10000 samples with `validation_split=0.1`, test accuracy equal to validation
   accuracy) — it is not a real run.

Everything runs on a CPU in seconds; the models are tiny, and for them one thread is faster than two."""),
    code("""import math

import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)"""),
    md(r"""## 1. Adam: the second moment is built from $g^2$, not $m^2$

Adam keeps two running averages per parameter: the mean of the gradient and the mean of its square,

$$m \leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad v \leftarrow \beta_2 v + (1 - \beta_2)\, g^2,$$
$$\hat m = \frac{m}{1 - \beta_1^t}, \qquad \hat v = \frac{v}{1 - \beta_2^t}, \qquad
\theta \leftarrow \theta - \alpha \frac{\hat m}{\sqrt{\hat v} + \varepsilon}.$$

One source writes $v \leftarrow \beta_2 v + (1 - \beta_2)\, m^2$. That is a different algorithm: $m$ is
already an average, so $m^2$ is the square of the mean, which is smaller than the mean of the squares
whenever the gradient is noisy — the steps come out too large exactly where the gradient is least
reliable. Below, both versions against `torch.optim.Adam` on a few steps of a small regression with
a fresh random batch each step: the $g^2$ version matches torch to rounding, the $m^2$ version does not."""),
    code("""def adam_by_hand(second_moment_from, steps=10, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8):
    torch.manual_seed(0)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    data = torch.Generator().manual_seed(1)
    for t in range(1, steps + 1):
        x = torch.randn(8, 5, generator=data, dtype=torch.float64)
        loss = ((x @ w - x.sum(1)) ** 2).mean()
        w.grad = None
        loss.backward()
        g = w.grad
        with torch.no_grad():
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * (g * g if second_moment_from == "g" else m * m)
            m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
            w -= lr * m_hat / (v_hat.sqrt() + eps)
    return w.detach()

def adam_torch(steps=10, lr=1e-2):
    torch.manual_seed(0)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 5, generator=data, dtype=torch.float64)
        loss = ((x @ w - x.sum(1)) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    return w.detach()

reference = adam_torch()
correct, garbled = adam_by_hand("g"), adam_by_hand("m")
print(f"v from g²: largest difference to torch.optim.Adam {(correct - reference).abs().max():.1e}")
print(f"v from m²: largest difference to torch.optim.Adam {(garbled - reference).abs().max():.1e}")
torch.testing.assert_close(correct, reference)
assert (garbled - reference).abs().max() > 1e-3"""),
    md(r"""## 2. Binary cross-entropy has brackets

For a label $y \in \{0, 1\}$ and a predicted probability $p$, the loss is the negative log-likelihood
of the label:

$$\mathrm{BCE}(p, y) = -\big[\,y \log p + (1 - y) \log(1 - p)\,\big].$$

Written without the brackets, $-y \log p + (1 - y) \log(1 - p)$, the minus sign only reaches the first
term: for $y = 0$ the "loss" becomes $\log(1 - p) \le 0$, which is *smallest* when $p \to 1$ — it
rewards the wrong answer. The bracketed form matches `F.binary_cross_entropy`; the other does not."""),
    code("""torch.manual_seed(0)
p = torch.rand(1000, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
y = torch.randint(0, 2, (1000,)).double()

with_brackets = -(y * p.log() + (1 - y) * (1 - p).log())
without_brackets = -y * p.log() + (1 - y) * (1 - p).log()
print(f"with brackets {with_brackets.mean():.4f} · F.binary_cross_entropy {F.binary_cross_entropy(p, y):.4f} "
      f"· without brackets {without_brackets.mean():.4f}")
torch.testing.assert_close(with_brackets.mean(), F.binary_cross_entropy(p, y))
torch.testing.assert_close(with_brackets, F.binary_cross_entropy(p, y, reduction="none"))
assert (without_brackets[y == 0] <= 0).all()      # negative "loss" on every y = 0 sample"""),
    md(r"""## 3. Random initialisation breaks symmetry; it does not prevent overfitting

One source says weights are initialised randomly "to avoid overfitting". Initialisation has little to
do with overfitting (that is what more data, regularisation and early stopping are for). The reason is
**symmetry**: two hidden units that start with the same weights compute the same output, receive the
same gradient, take the same step, and so stay identical for ever — the layer has the capacity of one
unit. Random initial weights make the units differ, so they can learn different features.

Below, a 64-2-10 network on digits: hidden unit 1 and hidden unit 2 start either equal (every
weight the same constant) or random, then take 50 SGD steps."""),
    code("""from bigmodel_nb import load_dataset

digits = load_dataset("digits")
X, y = digits.train.tensors()

def train_two_units(equal_start, steps=50):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 2), nn.Tanh(), nn.Linear(2, 10))
    if equal_start:
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(0.1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(steps):
        batch = slice(32 * step % len(X), 32 * step % len(X) + 32)
        loss = F.cross_entropy(net(X[batch]), y[batch])
        opt.zero_grad(); loss.backward(); opt.step()
    return net[0].weight.detach()          # row i: the incoming weights of hidden unit i

equal, random_start = train_two_units(True), train_two_units(False)
print(f"equal start:  |unit 1 − unit 2| = {(equal[0] - equal[1]).abs().max():.1e} after 50 steps")
print(f"random start: |unit 1 − unit 2| = {(random_start[0] - random_start[1]).abs().max():.2f} after 50 steps")
torch.testing.assert_close(equal[0], equal[1])            # still the same unit
assert (random_start[0] - random_start[1]).abs().max() > 0.1"""),
    md(r"""## 4. History: the dates

* **Hinton et al. 2006 was not a NIPS paper.** The 2006 papers that started the deep-learning revival are
  journal papers: Hinton, Osindero & Teh, "A fast learning algorithm for deep belief nets", *Neural
  Computation* 18(7), and Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural
  networks", *Science* 313.
* **BERT is from 2018 and is a language model.** BERT (Devlin et al., Google) is a Transformer encoder
  pretrained on text with masked-token prediction and next-sentence prediction. It does no speech
  recognition, and nothing called BERT existed in 2014; the 2014 speech results came from recurrent
  networks (e.g. Graves & Jaitly; Hannun et al.'s Deep Speech).
* **GPT-2 is from 2019** (Radford et al., OpenAI); GPT is from 2018 and GPT-3 from 2020.

## 5. Zero-, one- and few-shot are not fine-tuning

One source lists zero-, one- and few-shot learning as ways to fine-tune a model. They are the opposite:
ways to **use a pretrained model as it is**, with **no weight update**. The task is described in the
input — with no example (zero-shot), one example (one-shot) or a few examples (few-shot) written into
the prompt — and the model simply continues it; this is "in-context learning", popularised by GPT-3
(2020). **Fine-tuning** is different: it trains the weights further on labelled examples of the new
task (`06_finetuning` does it, with `--from run --new-head`). The cell below only builds the three
prompts: the model that reads them is not changed by them."""),
    code("""examples = [("cheese", "fromage"), ("house", "maison"), ("cat", "chat")]
task = "Translate English to French."
prompts = {shots: "\\n".join([task, *(f"{en} => {fr}" for en, fr in examples[:shots]), "sea otter =>"])
           for shots in (0, 1, 3)}
for shots, prompt in prompts.items():
    print(f"--- {shots}-shot ---\\n{prompt}")
assert all(prompt.endswith("sea otter =>") for prompt in prompts.values())"""),
    md(r"""## 6. A decoder is not "an encoder plus attention"

An **encoder** block is self-attention (every token sees every token) followed by a feed-forward layer.
A **decoder** block differs in what its self-attention may see: it is **causal** — token $i$ attends only
to tokens $j \le i$, so the model cannot look at the token it is asked to predict. GPT is a stack of
such blocks. In an **encoder–decoder** model (the original Transformer, T5) each decoder block has a
second attention, **cross-attention**, whose queries come from the decoder and whose keys and values
come from the encoder's output.

The cell checks both with PyTorch's own layers: with the causal mask, changing the last token changes
no earlier output; without it, every output changes. And `nn.TransformerDecoderLayer` has a
`multihead_attn` (cross-attention) that `nn.TransformerEncoderLayer` does not."""),
    code("""torch.manual_seed(0)
T, C = 6, 16
block = nn.TransformerEncoderLayer(d_model=C, nhead=4, dim_feedforward=32, dropout=0.0, batch_first=True).eval()
tokens = torch.randn(1, T, C)
changed = tokens.clone()
changed[0, -1] += 1.0                                   # change only the last token
causal_mask = nn.Transformer.generate_square_subsequent_mask(T)   # -inf above the diagonal
print(causal_mask)

with torch.no_grad():
    causal_gap = (block(tokens, src_mask=causal_mask, is_causal=True)
                  - block(changed, src_mask=causal_mask, is_causal=True))[0, :-1].abs().max()
    full_gap = (block(tokens) - block(changed))[0, :-1].abs().max()
print(f"earlier outputs changed by {causal_gap:.1e} with the causal mask, by {full_gap:.2f} without it")
assert causal_gap < 1e-6 and full_gap > 1e-2

decoder_layer = nn.TransformerDecoderLayer(d_model=C, nhead=4, batch_first=True)
attentions = [n for n, m in decoder_layer.named_children() if isinstance(m, nn.MultiheadAttention)]
print("decoder layer attentions:", attentions)
assert hasattr(decoder_layer, "multihead_attn") and not hasattr(block, "multihead_attn")"""),
    md(r"""## 7. More data helps less and less

"Data size is proportional to performance" would mean that doubling the data doubles the accuracy, or
halves the error, for ever. What is measured instead (Hestness et al. 2017, Kaplan et al. 2020) is a
**power law**: the test loss falls roughly as $L(D) \approx (D_c / D)^{\alpha}$ with a small exponent
$\alpha$ (for language models around 0.1), in the data size $D$ and likewise in the number of parameters —
each doubling buys a smaller gain than the last, until the model is too small to use more data.

A small version: the quickstart's digits MLP trained for the same 300 steps on 10 %, 20 %, 40 % and 80 %
of the training split, three seeds each. Every doubling of the data helps, and the gains shrink."""),
    code("""X_test, y_test = digits.test.tensors()

def accuracy_with(fraction, seed, steps=300):
    g = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(X), generator=g)[: int(fraction * len(X))]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = subset[torch.randint(len(subset), (64,), generator=g)]
        loss = F.cross_entropy(model(X[batch]), y[batch])
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        return (model(X_test).argmax(1) == y_test).double().mean().item()

fractions = [0.1, 0.2, 0.4, 0.8]
accuracy = {f: sum(accuracy_with(f, seed) for seed in range(3)) / 3 for f in fractions}
gains = [accuracy[b] - accuracy[a] for a, b in zip(fractions, fractions[1:])]
for f in fractions:
    print(f"{f:4.0%} of the data ({int(f * len(X)):>4} images): test accuracy {accuracy[f]:.3f}, "
          f"error {1 - accuracy[f]:.3f}")
print("gain from each doubling:", [round(g, 3) for g in gains])
assert all(g > 0 for g in gains)                         # more data helps ...
assert gains[2] < gains[1] and gains[2] < gains[0] / 2    # ... and less: the last doubling adds little"""),
    md(r"""The error roughly halves with the first doublings and then flattens: going from 80 % to 160 % of
this data would add well under a point. Proportionality would have predicted the opposite.

## 8. The MNIST log is not a real run

One source shows a Keras training log for its MNIST CNN — training on 60000 samples, validating on
10000, with `validation_split=0.1` — ending in a test accuracy identical to the last validation
accuracy. It cannot come from the code it sits under:

* with `validation_split=0.1`, Keras holds out the last 10 % of the 60,000 training images: it trains on
  **54,000** and validates on **6,000** of them. A log reading "60000 … 10000" is what you get from
  passing the test set as validation data, not from `validation_split`;
* the test set (10,000 images) and the validation split (6,000 other images) are different samples, so
  their accuracies differ — agreeing to every printed digit is not what two independent measurements do.

What such a CNN really reaches is measured in `01_quickstart` (section "A convolutional network"): on
the offline 8×8 digits the small CNN there reaches about 0.99 test accuracy, and the cell after it
trains the same kind of CNN on MNIST when MNIST can be downloaded. The 98.5 % the sources quote is their
figure, not one measured here."""),
    code("""n_train, validation_split = 60000, 0.1
n_val = int(n_train * validation_split)
print(f"validation_split={validation_split}: train on {n_train - n_val}, validate on {n_val} — not 60000 / 10000")
assert (n_train - n_val, n_val) == (54000, 6000)"""),
]


execute_and_write(cells, "09_what_the_sources_got_wrong.ipynb")
