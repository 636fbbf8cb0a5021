"""Hugging Face models the way their users train them: dict batches (`model(**batch)`), the model's own
`.loss`, `ModelOutput`s, padding (-100) left out of the metrics, weights from a `save_pretrained` folder,
a new classification head — built from small configs (random weights, no hub)."""
import copy

import pytest
import torch

from bigmodel_nb.api import fit
from bigmodel_nb.engine.core.adapters import as_bundle
from bigmodel_nb.engine.core.metrics import Metrics
from bigmodel_nb.engine.transfer import load_from, replace_head

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")


def tiny_bert(num_labels=2, seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=num_labels)
    return transformers.BertForSequenceClassification(config)


@pytest.fixture(scope="module")
def token_data():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 40, (160, 10), generator=g)
    rows = {"input_ids": ids.tolist(), "attention_mask": [[1] * 10] * 160, "label": (ids[:, 0] > 22).long().tolist()}
    splits = datasets.Dataset.from_dict(rows).train_test_split(test_size=0.25, seed=0)
    return datasets.DatasetDict({"train": splits["train"], "validation": splits["test"]})


def test_training_equals_the_hugging_face_loop_on_the_same_batches(token_data):
    model = tiny_bert()
    reference = copy.deepcopy(model)
    run = fit(model, token_data, epochs=2, lr=1e-3, seed=0, batch_size=16)
    assert run.status == "completed", run.error
    bundle = as_bundle(token_data)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    reference.train()
    torch.manual_seed(0)  # the run seeds dropout the same way
    losses = []
    for epoch in range(2):
        for batch in bundle.train.batches(16, "cpu", shuffle=True, seed=0, epoch=epoch):
            out = reference(**batch)  # Hugging Face's own loop
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            losses.append((out.loss.item(), len(batch["labels"])))
    diff = max((a - b).abs().max().item() for a, b in zip(reference.state_dict().values(), model.state_dict().values()))
    assert diff <= 1e-6
    first = run.rows("train")[0]  # the logged loss: the model's own losses over those steps, per sample
    window = losses[:first["step"]]
    assert first["loss"] == pytest.approx(sum(v * n for v, n in window) / sum(n for _, n in window), rel=1e-6)


def test_weights_from_a_save_pretrained_folder_and_a_new_head(tmp_path, token_data):
    trained = fit(tiny_bert(), token_data, epochs=1, seed=0, batch_size=16).model
    trained.save_pretrained(tmp_path)
    fresh = tiny_bert(num_labels=5, seed=1)
    result = load_from(fresh, tmp_path)  # the folder's model.safetensors; the 5-class head does not fit
    assert "classifier.weight" in [name for name, *_ in result.skipped]
    assert torch.equal(fresh.bert.embeddings.word_embeddings.weight, trained.bert.embeddings.word_embeddings.weight)
    model = tiny_bert(num_labels=2)
    assert replace_head(model, 3) == "classifier" and model.num_labels == model.config.num_labels == 3
    out = model(input_ids=torch.randint(0, 40, (4, 6)), labels=torch.tensor([0, 1, 2, 1]))
    assert out.logits.shape == (4, 3) and torch.isfinite(out.loss)


def test_padding_labels_are_left_out_of_token_accuracy():
    logits = torch.zeros(2, 3, 4)
    logits[..., 1] = 1.0  # predicts token 1 everywhere
    labels = torch.tensor([[1, 1, -100], [2, -100, -100]])
    metrics = Metrics("classification", "cpu")
    metrics.update(torch.tensor(0.5), logits, labels)
    assert metrics.compute()["accuracy"] == pytest.approx(2 / 3)  # 3 real tokens, 2 right


def test_a_model_output_and_a_tuple_output_read_the_same(token_data):
    from bigmodel_nb.engine.core.forward import read_output

    model = tiny_bert()
    batch = next(as_bundle(token_data).train.batches(4, "cpu"))
    out = model(**batch)
    logits, loss = read_output(out)
    assert torch.equal(logits, out.logits) and torch.equal(loss, out.loss)
    logits2, loss2 = read_output(out.to_tuple())  # return_dict=False with labels: (loss, logits)
    assert torch.equal(logits2, out.logits) and torch.equal(loss2, out.loss)
    assert torch.equal(read_output((out.logits, out.loss))[0], out.logits)  # the nanoGPT order
    assert read_output({"logits": out.logits})[1] is None


def word_tokenizer(words):
    """A Hugging Face fast tokenizer built in memory (word level, [CLS] a [SEP] b [SEP] for pairs): no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]")


def test_attention_reads_a_sentence_pair_with_a_hugging_face_tokenizer():
    from bigmodel_nb.engine import BigModelError
    from bigmodel_nb.engine.inspect.attention import attention

    tokenizer = word_tokenizer(["the", "cat", "sat", "dog", "ran"])
    maps = attention(tiny_bert(), ("the cat sat", "the dog ran"), tokenizer=tokenizer, layer=0)
    assert maps.tokens == ["[CLS]", "the", "cat", "sat", "[SEP]", "the", "dog", "ran", "[SEP]"]
    assert maps.weights(0).shape == (2, 9, 9)
    with pytest.raises(BigModelError, match="works as a sentence pair"):
        attention(tiny_bert(), ("a", "b", "c"), tokenizer=tokenizer)


def test_a_dataloader_with_the_tokenizers_padding_collator():
    from torch.utils.data import DataLoader

    tokenizer = word_tokenizer(["good", "bad", "film", "very", "a"])
    texts = ["a good film", "a very bad film", "good", "bad film", "very very good film", "a bad"] * 8
    rows = datasets.Dataset.from_dict({"text": texts, "label": [int("good" in t) for t in texts]})
    encoded = rows.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])  # ragged rows
    loader = DataLoader(encoded, batch_size=8, shuffle=False,
                        collate_fn=transformers.DataCollatorWithPadding(tokenizer))  # pads each batch
    model = tiny_bert()
    model.resize_token_embeddings(len(tokenizer))
    run = fit(model, {"train": loader, "validation": loader}, epochs=3, lr=3e-3, seed=0)
    assert run.status == "completed", run.error
    assert run.rows("val")[-1]["accuracy"] > 0.6 and run.step == 18
