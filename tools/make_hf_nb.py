"""Writes notebooks/08_huggingface.ipynb (the source of truth for its cells), then executes it
headless so the stored outputs are real. Run: .venv/bin/python tools/make_hf_nb.py"""
from notebook_writer import code, execute_and_write, md

cells = [
    md(r"""# Bring your own model: fine-tuning a Hugging Face transformer

`%%train` takes a Hugging Face model and Hugging Face data the way their users write them: a
`datasets.DatasetDict` with `train` and `validation` splits, a tokenizer from the `tokenizers` library,
a `BertForSequenceClassification` that computes its own loss when it is given `labels`, and a
`save_pretrained` folder to start the next task from. This tutorial does all of that **offline**:
nothing is downloaded from the Hugging Face Hub, so the data, the tokenizer and the model are built
here, in a few seconds.

1. a small text-classification task: generated sentences about four topics;
2. a word-level tokenizer trained in memory;
3. a tiny BERT with **random** weights;
4. `%%train` on the `DatasetDict`, and what the numbers mean;
5. the same training written as Hugging Face's own loop — checked to give the same weights;
6. `save_pretrained`, then a second task started from that folder with `--from` and `--new-head`,
   against the same model from scratch;
7. `%attention` on the trained model.

Be clear about what this is: **the mechanics of fine-tuning, not transfer from a pretrained
checkpoint.** A real checkpoint such as `bert-base-uncased` was pretrained on billions of words;
our model starts from random numbers and sees a few hundred sentences."""),
    code("%load_ext bigmodel_nb"),
    md("""The libraries print notes that are not for us: transformers imports torchao when it is installed
(the `compress` extra), and torchao logs about GPU kernels it cannot load; transformers and datasets
log their own notes and draw progress bars (while saving a model, at each `.map()`). We turn those
off once."""),
    code(r"""import logging

for name in ("torchao", "torch.utils._pytree"):       # notes printed when transformers imports torchao
    logging.getLogger(name).setLevel(logging.ERROR)

import random

import datasets
import pandas as pd
import torch
import transformers

transformers.logging.set_verbosity_error()   # transformers' notes and warnings: errors only
transformers.logging.disable_progress_bar()  # no bar while save_pretrained writes its file
datasets.disable_progress_bars()             # no bar for each .map()"""),
    md(r"""## 1. A small text-classification task, offline

Each sentence is *subject · mood word · verb · object · (when)*, with the subject, verb and object
drawn from one of four topics and the mood word from a positive or a negative list. The topic is the
label of the first task (the mood comes back in the second). The generator is seeded, so the data is
the same every time."""),
    code(r"""# NBVAL_CHECK_OUTPUT
TOPICS = {  # topic: (subjects, verbs, objects)
    "sport": (["the striker", "our goalkeeper", "the coach", "the team", "the referee", "the fans"],
              ["won", "lost", "played", "watched", "celebrated"],
              ["the final", "the match", "the league", "a penalty", "the derby"]),
    "food": (["the chef", "my grandmother", "the baker", "our waiter", "the cook", "the critic"],
             ["cooked", "tasted", "served", "burned", "ordered"],
             ["the soup", "fresh bread", "the pasta", "a cake", "the salad"]),
    "tech": (["the engineer", "our startup", "the developer", "the admin", "the tester", "the team"],
             ["shipped", "updated", "debugged", "installed", "tested"],
             ["the release", "the database", "the software", "a patch", "the server"]),
    "weather": (["the forecast", "the radio", "the farmer", "the pilot", "our neighbour", "the news"],
                ["promised", "expected", "feared", "reported", "watched"],
                ["heavy rain", "a storm", "the sunshine", "strong wind", "the snow"]),
}
TOPIC_NAMES = list(TOPICS)
MOODS = [["happily", "proudly", "finally", "gladly"], ["sadly", "angrily", "barely", "never"]]  # positive, negative
WHEN = ["", " yesterday", " last night", " this morning", " on sunday", " again"]


def sentences(n, seed):
    # n sentences with their topic (0-3) and mood (0 positive, 1 negative), as a Hugging Face Dataset
    rng = random.Random(seed)
    rows = {"text": [], "topic": [], "mood": []}
    for _ in range(n):
        topic, mood = rng.randrange(len(TOPICS)), rng.randrange(2)
        subjects, verbs, objects = TOPICS[TOPIC_NAMES[topic]]
        rows["text"].append(f"{rng.choice(subjects)} {rng.choice(MOODS[mood])} {rng.choice(verbs)} "
                            f"{rng.choice(objects)}{rng.choice(WHEN)}")
        rows["topic"].append(topic)
        rows["mood"].append(mood)
    return datasets.Dataset.from_dict(rows)


raw = sentences(800, seed=0).rename_column("topic", "label")   # "label": what Hugging Face code calls it
splits = raw.train_test_split(test_size=0.2, seed=0)             # a DatasetDict with train and test
texts = datasets.DatasetDict({"train": splits["train"], "validation": splits["test"]})
print(texts)
texts["train"][:3]"""),
    md(r"""## 2. A word-level tokenizer, trained in memory

A tokenizer turns text into token ids. Pretrained models come with theirs (a WordPiece vocabulary of
30,522 sub-words for BERT); ours is one id per word, learned from the **training** sentences only.
The pieces are the `tokenizers` library's: a `WordLevel` model (unknown words become `[UNK]`), a
whitespace pre-tokenizer, the special tokens `[PAD]` (padding), `[UNK]`, `[CLS]` (the first token,
whose final vector the classifier reads) and `[SEP]` (the end of a sentence), and a post-processor
that adds `[CLS]` and `[SEP]` the way BERT's does — also for a *pair* of sentences.
`PreTrainedTokenizerFast` wraps it so that it behaves like any tokenizer from transformers
(`tokenizer(texts, padding=..., truncation=...)`, `convert_ids_to_tokens`, `save_pretrained`)."""),
    code(r"""# NBVAL_CHECK_OUTPUT
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

word_level = Tokenizer(models.WordLevel(unk_token="[UNK]"))
word_level.pre_tokenizer = pre_tokenizers.Whitespace()
word_level.train_from_iterator(texts["train"]["text"],
                               trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
word_level.post_processor = processors.TemplateProcessing(
    single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
    special_tokens=[("[CLS]", word_level.token_to_id("[CLS]")), ("[SEP]", word_level.token_to_id("[SEP]"))])
tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]",
                                    cls_token="[CLS]", sep_token="[SEP]")

print(f"vocabulary: {len(tokenizer)} tokens")
example = tokenizer("the chef happily cooked a unicorn", padding="max_length", max_length=12)
print(example["input_ids"])
print(tokenizer.convert_ids_to_tokens(example["input_ids"]))
print(example["attention_mask"])"""),
    md(r"""Padding every sentence to the same `max_length` makes the columns rectangular, so the engine
stacks them into tensors; the **attention mask** (1 for real tokens, 0 for padding) keeps the model
from attending to the padding. `map(..., batched=True)` tokenizes many rows per call, on every split
of the `DatasetDict`; `remove_columns` drops the text and the mood, which the model does not take
(every column left is passed to `model(**batch)`). The `label` column stays: the engine renames it
`labels`, the keyword Hugging Face models expect."""),
    code(r"""# NBVAL_CHECK_OUTPUT
MAX_LENGTH = 12   # the longest sentence is 10 tokens with [CLS] and [SEP]


def tokenize(batch):
    return tokenizer(batch["text"], padding="max_length", truncation=True, max_length=MAX_LENGTH)


dd = texts.map(tokenize, batched=True, remove_columns=["text", "mood"])
print(dd)
print(f"longest sentence: {max(sum(mask) for mask in dd['train']['attention_mask'])} tokens")"""),
    md(r"""## 3. A tiny BERT — random weights

`BertForSequenceClassification` is BERT's encoder with a classifier on the `[CLS]` vector; built from
a `BertConfig` it has **random** weights (`from_pretrained("bert-base-uncased")` would download
110 million trained ones instead). Ours has 64-dimensional vectors, 2 layers of 2 heads and about
80,000 parameters — what matters here is that it is the real Hugging Face class, with the same
`forward(input_ids, attention_mask, labels)`, the same loss and the same `save_pretrained`."""),
    code(r"""from transformers import BertConfig, BertForSequenceClassification

config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128, max_position_embeddings=32, pad_token_id=tokenizer.pad_token_id,
                    num_labels=len(TOPIC_NAMES))
print(f"{BertForSequenceClassification(config).num_parameters():,} parameters")"""),
    md(r"""## 4. `%%train` on the `DatasetDict`

The cell defines `model`; `--data dd` is the `DatasetDict` itself. Each batch is a dict of tensors —
`input_ids`, `attention_mask`, `labels` — passed as `model(**batch)`, and the loss the model returns
(`out.loss`, cross-entropy since it has 4 labels) is the one that is minimised and plotted. Accuracy
is computed from `out.logits` against the labels. `--seed 0` fixes the initial weights, the order of
the batches and the dropout."""),
    code(r"""%%train --data dd --epochs 4 --batch-size 32 --lr 3e-3 --seed 0
model = BertForSequenceClassification(config)"""),
    code(r"""print(run.history[-1])
print(run.evaluate("val"))"""),
    md(r"""`run.history[-1]` is the last row: the validation pass after epoch 4 (`step` counts optimizer steps:
640 sentences / 32 = 20 per epoch). `run.evaluate("val")` runs the model over the validation split
again: **loss** is the model's own cross-entropy, averaged over the 160 validation sentences (ln 4 ≈ 1.39
is what guessing uniformly among the four topics scores), and **accuracy** the fraction of them whose
highest logit is the right topic. This task is easy by construction — the topic is written in three of
the words — so a perfect score says the pipeline works, not that the model understands text. There is
no test split here: the `DatasetDict` has only train and validation."""),
    md(r"""## 5. The same training, written as Hugging Face's own loop

Nothing is hidden in the engine: with the same initial weights, the same batches in the same order and
the same dropout, the loop a Hugging Face user writes gives the same model. `as_bundle(dd)` is the
`DatasetDict` as the engine reads it, and `batches(..., shuffle=True, seed=0, epoch=e)` yields the
batches `%%train --seed 0` used in epoch `e`; `torch.manual_seed(0)` before building the model is what
`--seed 0` does before the cell, and before the loop what the run does for dropout."""),
    code(r"""from bigmodel_nb.engine.core.adapters import as_bundle

torch.manual_seed(0)
hf_model = BertForSequenceClassification(config)          # the same initial weights as run.model had
optimizer = torch.optim.Adam(hf_model.parameters(), lr=3e-3)   # %%train's default optimizer
bundle = as_bundle(dd)
hf_model.train()
torch.manual_seed(0)
steps = 0
for epoch in range(4):
    for batch in bundle.train.batches(32, "cpu", shuffle=True, seed=0, epoch=epoch):
        out = hf_model(**batch)        # input_ids, attention_mask, labels -> out.loss, out.logits
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        steps += 1

diff = max((a - b).abs().max().item()
           for a, b in zip(hf_model.state_dict().values(), run.model.state_dict().values()))
assert diff < 1e-6, diff"""),
    code(r"""# NBVAL_CHECK_OUTPUT
print(f"{steps} steps; largest difference between the two models' weights: {diff:.6f}")"""),
    md(r"""Zero: where this notebook was written the two models are equal bit for bit, because the engine runs
the very same operations. (A difference of about 1e-7 — float32 rounding, from operations done in another
order — would also print as 0.000000; the assert allows up to 1e-6.) The engine's part is the rest: the
dashboard, validation, seeding, checkpoints, Stop and Pause."""),
    md(r"""## 6. `save_pretrained`, then a second task from that folder

`save_pretrained(folder)` writes the weights (`model.safetensors`) and the architecture
(`config.json`); the tokenizer saves its files next to them, as a model folder on the Hub has them. We
work in a temporary folder, removed at the end of this section, so that nothing is left behind."""),
    code(r"""import os
import tempfile

notebook_dir = os.getcwd()
workdir = tempfile.TemporaryDirectory()
os.chdir(workdir.name)                       # relative names below land in the temporary folder
run.model.save_pretrained("tiny-bert-topics")
tokenizer.save_pretrained("tiny-bert-topics")
print(sorted(os.listdir("tiny-bert-topics")))"""),
    md(r"""The second task uses the same kind of sentences (600 new ones) with **8 labels**: the topic *and* the
mood, e.g. `food negative`. It is related to the first — the topic part is exactly what the saved model
learned — but the model was never asked about the mood words, which it may have learned to ignore."""),
    code(r"""# NBVAL_CHECK_OUTPUT
LABELS2 = [f"{topic} {mood}" for topic in TOPIC_NAMES for mood in ("positive", "negative")]
raw2 = sentences(600, seed=1).map(lambda row: {"label": 2 * row["topic"] + row["mood"]},
                                  remove_columns=["topic", "mood"])
splits2 = raw2.train_test_split(test_size=0.25, seed=0)
dd2 = datasets.DatasetDict({"train": splits2["train"], "validation": splits2["test"]}).map(
    tokenize, batched=True, remove_columns=["text"])
print(dd2)
print([LABELS2[label] for label in splits2["train"]["label"][:4]], splits2["train"]["text"][:2])"""),
    md(r"""`--from tiny-bert-topics` reads the folder's `model.safetensors` and copies every tensor whose name and
shape match; `--new-head 8` then replaces the classifier (4 outputs) by a fresh one with 8 and sets
`config.num_labels = 8`, so the model's own loss is computed over 8 classes. The cell builds the same
architecture as the saved model to receive the weights; the lines above the dashboard say what was
loaded and replaced."""),
    code("%%train --data dd2 --epochs 10 --batch-size 32 --lr 1e-3 --seed 0 --from tiny-bert-topics --new-head 8 "
         """--name from_run
model = BertForSequenceClassification(config)"""),
    md(r"""The same cell without `--from` trains the same architecture from random weights, with the same seed,
batches and head: the only difference is where the encoder starts."""),
    code(r"""%%train --data dd2 --epochs 10 --batch-size 32 --lr 1e-3 --seed 0 --new-head 8 --name scratch_run --quiet
model = BertForSequenceClassification(config)"""),
    md(r"""The validation accuracy after each epoch, and — after the last one — how often each model gets the
topic right and the mood right (an 8-way label is right when both are)."""),
    code(r"""val2 = as_bundle(dd2).val.tensors()


def topic_and_mood_accuracy(model):
    model.eval()
    with torch.no_grad():
        predicted = model(**val2).logits.argmax(-1)
    labels = val2["labels"]
    return {"topic": (predicted // 2 == labels // 2).float().mean().item(),
            "mood": (predicted % 2 == labels % 2).float().mean().item()}


curves = pd.DataFrame({"--from tiny-bert-topics": [r["accuracy"] for r in from_run.rows("val")],
                       "from scratch": [r["accuracy"] for r in scratch_run.rows("val")]},
                      index=pd.RangeIndex(1, 11, name="epoch"))
parts = pd.DataFrame({name: topic_and_mood_accuracy(r.model) for name, r in
                      [("--from tiny-bert-topics", from_run), ("from scratch", scratch_run)]})
print("validation accuracy (8 labels) after each epoch:")
print(curves.T.to_string(float_format="{:.2f}".format))
print("\nafter epoch 10, the two parts of the label:")
print(parts.to_string(float_format="{:.2f}".format))
transferred, scratch = curves["--from tiny-bert-topics"], curves["from scratch"]
assert transferred.loc[1] > scratch.loc[1] + 0.2                 # the head start after epoch 1 (every seed we tried)
assert (scratch.loc[3:] >= transferred.loc[3:]).all()            # this run (seed 0), from epoch 3 on: see below
os.chdir(notebook_dir)
workdir.cleanup()"""),
    md(r"""**Reading the table.** Started from `tiny-bert-topics`, the model is far ahead after the first epoch:
it already tells the four topics apart, and knowing the topic while guessing the mood is worth up to
one half on 8 labels; from scratch the model starts near chance (1/8). But in this run the head start
lasts two epochs. From the third, the model from scratch is ahead, and it reaches 1.00 at epoch 5; the
transferred one needs all ten epochs to come close. Both end up right about the topic — the difference is
the mood, the one thing the first task did not need. A plausible reading: the first task trained the
encoder to put the topic on `[CLS]` *whatever* the mood word, and that has to be undone before the mood
can be learned, while the random encoder has nothing to undo.

This is one seed each, and the end of such a run is not a verdict. With seeds 0 to 5 (run outside this
notebook), the head start after one epoch was always there — 0.39 to 0.53 against 0.09 to 0.13 — while
after ten epochs the model from scratch was ahead with three seeds, the transferred one with one, and
two were level. On this task, transfer buys a faster start and nothing at the end: the two tasks share
only the topic, and an 80,000-parameter encoder trained for 80 steps holds little else.

A real pretrained checkpoint changes the scale, not the mechanics: its encoder has seen enough text to
carry most of what a new task needs, so a new head and a little fine-tuning go much further — that is why
fine-tuning works in practice. The cell is the same: `--from` a `save_pretrained` folder and `--new-head K`."""),
    md(r"""## 7. Attention maps

`%attention MODEL TEXT --tokenizer VAR` tokenizes the text with the Hugging Face tokenizer, runs one
forward pass with the attention weights returned (the model is switched to eager attention for that
pass and back afterwards) and draws them: one row per token attending (the query), one column per
token attended to (the key), each row summing to 1. We look at the topic model of section 4."""),
    code(r"""topic_model = run.model"""),
    code(r"""%attention topic_model "the chef happily cooked the soup yesterday" --tokenizer tokenizer --layer 0"""),
    code(r"""cls_row = pd.DataFrame(attention_maps.weights(0)[:, 0].numpy(), columns=attention_maps.tokens,
                       index=[f"head {h}" for h in attention_maps.heads])
print("layer 0, the [CLS] row (where [CLS] takes its information from):")
print(cls_row.round(2).to_string())"""),
    code(r"""assert set(cls_row.idxmax(axis=1)) <= {"chef", "cooked"}   # what the text below describes"""),
    md(r"""The **[CLS] row** matters most for classification: the classifier reads only the final `[CLS]` vector,
so this row says which tokens layer 0 mixes into it (the next layer mixes again). Here [CLS] takes
most of its information from *chef* and *cooked* — food words, which is what a topic classifier needs.
Do not read linguistics into it, though: the model started from random weights, trained for 80 steps on
templated sentences, and whatever puts the right topic on `[CLS]` is good enough for its loss. The
next map shows what it really learned.

A sentence pair is tokenised as `[CLS] a [SEP] b [SEP]` (the post-processor of section 2); give it as a
variable holding a tuple of two texts. This model never saw a pair."""),
    code(r"""pair = ("the chef happily cooked the soup", "the striker sadly lost the final")"""),
    code(r"""%attention topic_model pair --tokenizer tokenizer --layer 1"""),
    code(r"""import bigmodel_nb

food_words = {word for phrases in TOPICS["food"] for phrase in phrases for word in phrase.split()}
food_words -= {"the", "a", "my", "our"}
topic_model.eval()
for order, texts_ab in (("as given", pair), ("swapped", pair[::-1])):
    maps = bigmodel_nb.attention(topic_model, texts_ab, tokenizer=tokenizer, layer=1, show=False)  # %attention
    cls = maps.weights(1)[:, 0].mean(0)                          # layer 1's [CLS] row, averaged over the heads
    looked_at = [token for token, weight in zip(maps.tokens, cls) if weight > 0.1]
    with torch.no_grad():
        topic = TOPIC_NAMES[topic_model(**tokenizer(*texts_ab, return_tensors="pt")).logits.argmax()]
    print(f"{order}: {texts_ab}\n    layer 1's [CLS] attends to {looked_at}; predicted topic: {topic}")
    assert set(looked_at) <= food_words and topic == 'food'"""),
    md(r"""In layer 1 nearly every row of the pair — those of *striker*, *lost* and *final* included — attends to
the food words of the first sentence. Is that the position (the model reads the first sentence) or the
words? Swapping the two sentences tells: `[CLS]` still attends to the food words, now in the second
sentence, and the prediction stays *food*. What the model learned is that food words win over sport
words — a question its training never asked, since no training sentence mixed two topics, so the answer
is an accident of 80 steps from random weights, not a rule about language. That is the general caution
with attention maps: a pattern is a hypothesis about the model, to be tested (as here, by changing the
input) rather than read as an explanation."""),
    md(r"""**Where next.** The same cells work for a checkpoint you have on disk: `--from` its folder (the
`save_pretrained` layout), `--new-head K` for your classes, `--freeze "bert.embeddings.*"` to keep part
of it fixed (see `06_finetuning.ipynb` for when freezing pays), and `--activation-checkpointing` or
`--amp bf16` when it is big (`07_scaling.ipynb`)."""),
]

execute_and_write(cells, "08_huggingface.ipynb")
