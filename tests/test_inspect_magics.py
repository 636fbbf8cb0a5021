"""%summary, %grads, %attention and %%train --watch-grads through a real IPython shell."""
import pytest
import torch
from IPython.core.error import UsageError

GPT_CELL = ("from bigmodel_nb.models import GPT, GPTConfig\n"
            "torch.manual_seed(0)\n"
            "gpt = GPT(GPTConfig(vocab_size=96, block_size=64, n_layer=2, n_head=2, n_embd=32))")


@pytest.fixture
def ip(shell, monkeypatch):
    monkeypatch.setenv("BIGMODEL_NB_UI", "text")
    shell.run_line_magic("load_ext", "bigmodel_nb")
    shell.run_cell("import torch\nfrom torch import nn\n"
                   "torch.manual_seed(0)\nmodel = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))")
    yield shell
    for name in ("run", "model", "gpt", "model_summary", "gradients", "attention_maps", "lm_run"):
        shell.user_ns.pop(name, None)


def test_summary_counts_and_estimates(ip, capsys):
    ip.run_line_magic("summary", "model --batch-size 16 --precision bf16")
    s = ip.user_ns["model_summary"]
    assert s.total_params == s.trainable_params == 64 * 32 + 32 + 32 * 10 + 10
    assert s.estimate(batch_size=16, precision="bf16")["weights"] == 2 * s.total_params
    out = capsys.readouterr().out
    assert "2.41K parameters" in out and "training memory (batch 16, bf16, adam)" in out


def test_summary_errors_are_one_sentence(ip):
    with pytest.raises(UsageError, match=r"could not run on an input of shape \(2, 3\).*pass --input-shape"):
        ip.run_line_magic("summary", "model --input-shape 3")
    with pytest.raises(UsageError, match="Unknown precision 'fp4'"):
        ip.run_line_magic("summary", "model --precision fp4")
    with pytest.raises(UsageError, match="No variable named 'nothing'"):
        ip.run_line_magic("summary", "nothing")


def test_grads_records_a_copy_and_stores_the_report(ip, capsys):
    before = {k: v.clone() for k, v in ip.user_ns["model"].state_dict().items()}
    ip.run_line_magic("grads", "model --data digits --steps 6 --name gradients")
    report = ip.user_ns["gradients"]
    assert report.layers == ["0 (Linear)", "2 (Linear)"] and all(len(v) == 6 for v in report.norms.values())
    assert all(torch.equal(v, before[k]) for k, v in ip.user_ns["model"].state_dict().items())
    assert "gradient flow: 2 layers × 6 recorded steps" in capsys.readouterr().out
    with pytest.raises(UsageError, match="No layer matches --layers 'conv'"):
        ip.run_line_magic("grads", "model --data digits --layers conv")
    with pytest.raises(UsageError, match="No data"):
        ip.run_line_magic("grads", "model")


def test_train_watch_grads_attaches_the_report_to_the_run(ip):
    ip.run_line_magic("train", "model --data digits --epochs 1 --watch-grads --watch-every 4 --quiet")
    run = ip.user_ns["run"]
    assert run.status == "completed" and len(run.gradients.norms["0 (Linear)"]) == run.step // 4


def test_attention_reads_text_with_the_vocabulary_of_the_run_that_trained_the_model(ip, capsys):
    ip.run_cell(GPT_CELL)
    ip.run_line_magic("train", "gpt --data python-stdlib --steps 2 --batch-size 4 --quiet --name lm_run")
    ip.run_cell('%attention gpt "def f(x):" --layer 1')
    maps = ip.user_ns["attention_maps"]
    assert "".join(maps.tokens) == "def␣f(x):" and maps.layers == [1] and maps.causal
    assert torch.allclose(maps.weights(1).sum(-1), torch.ones(2, 9), atol=1e-5)
    assert not any(m.capture for m in (b.attn for b in ip.user_ns["gpt"].blocks))
    assert "AttentionMaps(zoo, 9 tokens" in capsys.readouterr().out


def test_attention_inputs_and_errors(ip):
    ip.run_cell(GPT_CELL)
    ip.run_line_magic("attention", "gpt [5,6,7]")
    assert ip.user_ns["attention_maps"].tokens == ["5", "6", "7"]  # no tokenizer: ids as labels
    ip.run_line_magic("attention", "gpt 3 --data python-stdlib --head 1")
    maps = ip.user_ns["attention_maps"]
    assert len(maps.tokens) == 64 and maps.heads == [1]
    with pytest.raises(UsageError, match="The input has 70 tokens but the model's context is 64"):
        ip.run_line_magic("attention", f"gpt {[1] * 70}".replace(" ", "").replace("gpt", "gpt "))
    with pytest.raises(UsageError, match="Layer 2 is out of range: the model has 2 layers"):
        ip.run_line_magic("attention", "gpt [1,2] --layer 2")
    with pytest.raises(UsageError, match="has no attention layers"):
        ip.run_line_magic("attention", "model [1,2]")
    with pytest.raises(UsageError, match="quote text like"):
        ip.run_line_magic("attention", "gpt hello")
    with pytest.raises(UsageError, match="Give an input after the model"):
        ip.run_line_magic("attention", "gpt")


def test_compress_applies_steps_in_line_order_and_keeps_the_original(ip):
    before = {k: v.clone() for k, v in ip.user_ns["model"].state_dict().items()}
    ip.run_line_magic("compress", "model --data digits --finetune 1 --prune 0.5 --quantize fp16 --quiet")
    stages = ip.user_ns["compression"].stages
    assert [r["stage"].split()[0] for r in stages] == ["original", "finetune", "prune", "quantize"]
    assert stages[2]["real"] is False and stages[2]["nonzero"] < 0.6 * stages[2]["params"]  # masks only
    assert stages[3]["size_bytes"] < 0.6 * stages[0]["size_bytes"]
    with pytest.raises(UsageError, match="put --quantize last"):
        ip.run_line_magic("compress", "model --quantize fp16 --prune 0.5")
    assert all(torch.equal(v, before[k]) for k, v in ip.user_ns["model"].state_dict().items())
    with pytest.raises(UsageError, match="prune ratio must be between 0 and 1"):
        ip.run_line_magic("compress", "model --prune 1.5")
    with pytest.raises(UsageError, match="Nothing to do"):
        ip.run_line_magic("compress", "model")
    ip.user_ns.pop("compression", None)


def test_compress_distill_reports_the_student_alone_and_no_baseline_omits_it(ip):
    ip.run_cell("student = nn.Sequential(nn.Linear(64, 10))")
    ip.run_line_magic("compress", "model --data digits --distill student --epochs 1 --seed 0 --quiet --name d")
    report = ip.user_ns["d"]
    assert report.baseline is not None and report.baseline["accuracy"] is not None
    assert "α=0.5" in report.stages[1]["note"] and "lr 0.03" in report.stages[1]["note"]
    ip.run_line_magic("compress", "model --data digits --distill student --epochs 1 --quiet --no-baseline --name d")
    assert ip.user_ns["d"].baselines == [] and len(ip.user_ns["d"].runs) == 1
    with pytest.raises(UsageError, match="alpha weighs the teacher"):
        ip.run_line_magic("compress", "model --data digits --distill student --alpha 2")
    for name in ("d", "student"):
        ip.user_ns.pop(name, None)


def test_evaluate_a_run_or_a_model_and_store_the_evaluation(ip, capsys):
    ip.run_line_magic("train", "--data digits --epochs 1 --seed 0 --quiet")
    ip.run_line_magic("evaluate", "")  # the run, by default
    ev = ip.user_ns["evaluation"]
    assert ev.metrics == ip.user_ns["run"].evaluate("test") and ev.size == 270
    out = capsys.readouterr().out
    assert "evaluate: 'digits' test, 270 samples" in out and "f1_macro" in out and "top losses:" in out
    ip.run_line_magic("evaluate", "model --split val --metrics accuracy,f1_macro --name val_eval")
    assert list(ip.user_ns.pop("val_eval").metrics) == ["accuracy", "f1_macro"]  # the run's data, found by model
    ip.run_line_magic("evaluate", "model --data digits --split validation --name ev2")
    assert ip.user_ns.pop("ev2").split == "validation"
    ip.user_ns.pop("evaluation")


def test_evaluate_errors_are_one_sentence(ip):
    ip.run_line_magic("train", "--data digits --steps 2 --quiet")
    with pytest.raises(UsageError, match=r"'digits' has no 'tst' split; use --split train or val or test"):
        ip.run_line_magic("evaluate", "run --split tst")
    with pytest.raises(UsageError, match=r"Unknown metric for classification 'f1'.*\(did you mean 'f1_macro'\?\)"):
        ip.run_line_magic("evaluate", "run --metrics f1")
    with pytest.raises(UsageError, match=r"failed on a batch of 'spirals' \(inputs \[\d+, 2\].*input size matches"):
        ip.run_line_magic("evaluate", "run --data spirals")
    with pytest.raises(UsageError, match="No variable named 'nothere'"):
        ip.run_line_magic("evaluate", "nothere")
    ip.run_cell("fresh = nn.Linear(64, 10)\nnumber = 3")
    with pytest.raises(UsageError, match=r"No data to evaluate 'fresh' on; pass --data digits"):
        ip.run_line_magic("evaluate", "fresh")
    with pytest.raises(UsageError, match=r"takes a Run or a torch.nn.Module, not a int"):
        ip.run_line_magic("evaluate", "number --data digits")
    assert "evaluation" not in ip.user_ns
