"""Knowledge distillation for `%compress --distill`: the loss, and the student+teacher module `Run` trains.

Knowledge distillation (Hinton, Vinyals & Dean 2015): a small *student* learns from a frozen
*teacher*'s softened outputs as well as from the labels:

    L = α T² KL(softmax(z_t / T) ‖ softmax(z_s / T)) + (1 − α) CE(z_s, y)

The temperature T > 1 flattens both distributions so the student also sees how the teacher ranks
the wrong classes ("dark knowledge"); the T² factor keeps the soft term's gradients on the same
scale as the hard term's whatever T is. The teacher runs in eval mode under ``no_grad`` and is
hidden from the optimizer: it never changes. Training goes through the ordinary `Run` (the same
loop, history, Stop/Pause and callbacks as ``%%train``): `Distiller` wraps student and teacher as
one module whose ``forward(x, targets)`` returns ``(student logits, distillation loss)``, so a
`TrainingDashboard` can draw it live.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import BigModelError, describe_exception
from ..core.forward import read_output

# Defaults measured on the tutorial's task (digits; teacher 64-512-512-10 at 98.1 %; students 64-16-10 and
# 64-32-10; 10 epochs; the same student trained alone with the same budget as the baseline). At Adam's usual
# 1e-3 the soft targets learn more slowly than the labels and distillation loses (≈69 % vs 80 % after 6
# epochs); at 3e-2 with T=4, α=0.5 the distilled student won 8 of 12 seeded runs, tied 2 (97.9 % vs 97.2 %
# on average). `%compress --distill` measures that baseline every time and says which won.
TEMPERATURE, ALPHA, DISTILL_LR, DISTILL_EPOCHS = 4.0, 0.5, 3e-2, 10


def logits_of(out) -> torch.Tensor:
    """The logits in whatever a model returns: a tensor, a tuple, a dict or a Hugging Face output."""
    return read_output(out)[0]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float = TEMPERATURE, alpha: float = ALPHA) -> torch.Tensor:
    """α T² KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α) CE(z_s, y), averaged over samples (over
    tokens for ``[B, T, V]`` sequence logits). Computed in float32 whatever the logits' dtype.

    Example: ``distillation_loss(student(x), teacher(x).detach(), y, temperature=4.0, alpha=0.5)``
    """
    classes = student_logits.size(-1)
    s = student_logits.reshape(-1, classes).float()
    t = teacher_logits.reshape(-1, classes).float().detach()
    # KL(p_t ‖ p_s) = Σ p_t (log p_t − log p_s); "batchmean" divides the sum by the number of rows.
    soft = F.kl_div(F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(s, targets.reshape(-1))
    return alpha * temperature ** 2 * soft + (1.0 - alpha) * hard


class Distiller(nn.Module):
    """Student plus frozen teacher as one trainable module: ``forward(x, targets=None)`` returns
    ``(student logits, distillation loss)`` (loss None without targets), so `Run` trains it as it
    trains any model. Only the student's parameters are registered: the teacher is kept out of
    ``.parameters()``, ``.train()`` and ``.to()`` so it stays frozen, in eval mode, and out of the
    optimizer. Validation rows report the same distillation loss and the student's accuracy.

    Example: ``Run(Distiller(student, teacher), "digits", TrainConfig(epochs=5)).run_here()``
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, temperature: float = TEMPERATURE,
                 alpha: float = ALPHA):
        super().__init__()
        check_temperature_alpha(temperature, alpha)
        self.student = student
        self._teacher = [teacher.eval()]  # a list, not a submodule: never trained, never in the optimizer
        self.temperature, self.alpha = float(temperature), float(alpha)

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def forward(self, x, targets=None):
        logits = logits_of(self.student(x))
        if targets is None:
            return logits, None
        with torch.no_grad():
            teacher_logits = logits_of(self._teacher_on(x.device)(x))
        return logits, distillation_loss(logits, teacher_logits, targets, self.temperature, self.alpha)

    def _teacher_on(self, device) -> nn.Module:
        teacher = self.teacher
        p = next(teacher.parameters(), None)
        if p is not None and p.device != device:
            teacher.to(device)  # the run moved the student; the teacher follows once
        return teacher


def check_temperature_alpha(temperature: float, alpha: float) -> None:
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise BigModelError(f"The distillation temperature must be a number > 0 (typically 2–8); got {temperature!r}.")
    if not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise BigModelError("--alpha weighs the teacher's soft targets against the labels and must be in [0, 1]; "
                            f"got {alpha!r}.")


def check_student(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> None:
    """Run both on one small batch; a student whose output shape differs from the teacher's gets
    one sentence. Modes are restored, weights untouched."""
    outs = []
    for label, model in (("teacher", teacher), ("student", student)):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                outs.append(logits_of(model(x)))
        except BigModelError:
            raise
        except Exception as exc:
            raise BigModelError(f"The {label} failed on the data's inputs {list(x.shape)}: "
                                f"{describe_exception(exc)}.") from None
        finally:
            model.train(was_training)
    t, s = outs
    if t.shape != s.shape:
        raise BigModelError(f"The student outputs shape {list(s.shape)} but the teacher outputs {list(t.shape)} "
                            f"for the same batch; give the student the teacher's output size ({t.shape[-1]}).")
