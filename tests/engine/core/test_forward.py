"""One forward pass, whichever way the model is called: the loss it gets, evaluation, and preflight."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bigmodel_nb.api import fit
from bigmodel_nb.engine import BigModelError, load_dataset
from bigmodel_nb.engine.core.forward import forward_loss, resolve_loss, takes_targets
from bigmodel_nb.engine.core.metrics import evaluate_model


def mlp(out=10):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, out))


def test_sequence_logits_are_flattened_and_column_targets_are_not_broadcast():
    logits, y = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    _, loss = forward_loss(lambda x: logits, None, y, F.cross_entropy, with_targets=False)
    assert loss == pytest.approx(F.cross_entropy(logits.reshape(10, 7), y.reshape(10)).item())
    # (n,) targets against (n, 1) outputs: mse would silently broadcast to (n, n) and train on nonsense.
    out, target = torch.zeros(4, 1), torch.tensor([1.0, 2.0, 3.0, 4.0])
    _, loss = forward_loss(lambda x: out, None, target, F.mse_loss, with_targets=False)
    assert loss.item() == pytest.approx(7.5)


def test_hugging_face_and_nanogpt_outputs_bring_their_own_loss():
    own = torch.tensor(0.25)
    hf = lambda x: SimpleNamespace(logits=torch.zeros(3, 2), loss=own)  # noqa: E731
    assert forward_loss(hf, None, torch.zeros(3, dtype=torch.long), None, False)[1] is own

    class NanoGPT(nn.Module):
        def forward(self, idx, targets=None):
            return idx.float(), None if targets is None else own

    assert takes_targets(NanoGPT()) and not takes_targets(mlp())
    assert forward_loss(NanoGPT(), torch.ones(2, 3), torch.ones(2, 3), None, True)[1] is own
    with pytest.raises(BigModelError, match="returned no loss and none was given; pass --loss"):
        forward_loss(lambda x: torch.zeros(3, 2), None, torch.zeros(3), resolve_loss(None, None), False)


def test_evaluate_model_matches_a_hand_count_and_leaves_the_model_as_it_was():
    bundle, model = load_dataset("digits"), mlp()
    model.train()
    before = [p.clone() for p in model.parameters()]
    row = evaluate_model(model, bundle.val, batch_size=100, device="cpu", loss_fn=F.cross_entropy,
                         task="classification")
    x, y = bundle.val.tensors()
    with torch.no_grad():
        logits = model(x)
    assert row["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert row["accuracy"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())
    assert model.training and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_model_that_does_not_fit_the_data_fails_before_training():
    model = nn.Sequential(nn.Linear(32, 10))
    with pytest.raises(BigModelError, match=r"input shape \(64,\)"):
        fit(model, "digits", epochs=1)
    with pytest.raises(BigModelError, match="outputs 3 values per sample but 'digits' has 10 classes"):
        fit(mlp(out=3), "digits", epochs=1)
