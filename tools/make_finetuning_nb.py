"""Writes notebooks/06_finetuning.ipynb (the source of truth for its cells), then executes it
headless so the stored outputs are real. Run: .venv/bin/python tools/make_finetuning_nb.py"""
from notebook_writer import code, execute_and_write, md

cells = [
    md(r"""# Fine-tuning and transfer learning — and when it does not pay

**Transfer learning** reuses what a model learned on one task for another: keep its feature extractor,
replace the **head** (the last layer, sized for the old classes) with a fresh one for the new
classes, and train — only the head (**frozen** features), or everything starting from the pretrained
weights (**fine-tuning**). It pays when the new task has little labelled data and the old features
fit it.

Here we pretrain a small CNN on the digits **0–4**, then learn the digits **5–9** from only
**50 labelled examples** in four ways, averaged over five seeds:

1. frozen pretrained features + a new head;
2. all layers fine-tuned from the pretrained weights;
3. the same architecture from scratch;
4. frozen **random** features + a new head (what the pretrained features are worth).

The result on this easy task is instructive: read it before reaching for frozen features."""),
    code("%load_ext bigmodel_nb"),
    code("""import pandas as pd
import torch

from bigmodel_nb import load_dataset
from bigmodel_nb.engine.transfer import class_subset
from bigmodel_nb.models import CNN, CNNConfig

digits = load_dataset("digits", flatten=False)
first_half = class_subset(digits, [0, 1, 2, 3, 4])
few_second = class_subset(digits, [5, 6, 7, 8, 9], per_class=10, seed=0)   # 50 training images
print(first_half)
print(few_second)"""),
    md("## 1. Pretrain on 0–4"),
    code("""%%train --data first_half --epochs 3 --lr 3e-3 --seed 0 --quiet --name pretrain_run
model = CNN(CNNConfig(in_channels=1, channels=(16, 32), num_classes=5))"""),
    code("""print(f"pretrained on 0–4: test accuracy {pretrain_run.evaluate('test')['accuracy']:.3f}")"""),
    md(r"""## 2. `%%train --from`: a new head, frozen features

`--from pretrain_run` copies every weight whose name and shape match (the 5-class head of the
pretrained model matches too, but `--new-head 5` replaces it with a fresh one for the new task);
`--freeze "convs.*"` stops the convolutions from training — the dashboard line reports trainable
and frozen parameters. The cell defines a new model of the same architecture to receive the weights."""),
    code("%%train --data few_second --epochs 20 --lr 1e-2 --batch-size 16 --seed 0 --from pretrain_run --new-head 5 "
         """--freeze convs.* --name frozen_run
model = CNN(CNNConfig(in_channels=1, channels=(16, 32), num_classes=5))"""),
    code("""pretrained = pretrain_run.model.state_dict()
tuned = frozen_run.model.state_dict()
assert all(torch.equal(tuned[k], pretrained[k]) for k in tuned if k.startswith("convs"))   # frozen: bit-identical
assert not torch.equal(tuned["head.weight"][:, :5], pretrained["head.weight"][:, :5])
print(f"frozen features + new head: test accuracy on 5–9 {frozen_run.evaluate('test')['accuracy']:.3f}")"""),
    md("## 3. Four ways, five seeds"),
    code("""from bigmodel_nb.engine.transfer import prepare
from bigmodel_nb.engine.core.run import Run
from bigmodel_nb.engine.core.config import TrainConfig

def accuracy(way, seed):
    torch.manual_seed(seed)
    model = CNN(CNNConfig(in_channels=1, channels=(16, 32), num_classes=5))
    if way == "frozen pretrained + head":
        callbacks = prepare(model, from_=pretrain_run, new_head=5, freeze="convs.*").callbacks
    elif way == "fine-tune all from pretrained":
        callbacks = prepare(model, from_=pretrain_run, new_head=5).callbacks
    elif way == "frozen random + head":
        callbacks = prepare(model, freeze="convs.*").callbacks
    else:
        callbacks = []
    run = Run(model, few_second, TrainConfig(epochs=20, lr=1e-2, batch_size=16, seed=seed), callbacks=callbacks)
    run.run_here()
    return run.evaluate("test")["accuracy"]

ways = ["frozen pretrained + head", "fine-tune all from pretrained", "from scratch", "frozen random + head"]
results = pd.DataFrame({way: [accuracy(way, seed) for seed in range(5)] for way in ways})
summary = results.agg(["mean", "std"]).T.round(3)
summary"""),
    code("""m = summary["mean"]
assert m["frozen pretrained + head"] > m["frozen random + head"]           # the pretrained features carry something
assert m["fine-tune all from pretrained"] > m["frozen pretrained + head"]   # but freezing them costs accuracy here"""),
    md(r"""**Reading the table.** The pretrained features are worth something: frozen, they beat frozen
*random* features. But training the whole small network — from the pretrained weights or even from
scratch — does better than freezing it: 8×8 digits are simple enough that 50 labels train all of a
small CNN, and features learned on 0–4 are not exactly what 5–9 need. Freezing pays when the
network is large (far more parameters than the new labels could train), the pretraining data is much
richer than the new task's (ImageNet → your photos, a language model → your text), and the two
tasks share their low-level structure. Measure it, as here, rather than assume it.

`--unfreeze-after N` combines the two: train the head on frozen features first, then everything.
`bigmodel_nb.export(model, example, "model.pt2")` writes the result as a `torch.export` program for
deployment."""),
]

execute_and_write(cells, "06_finetuning.ipynb")
