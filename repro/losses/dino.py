"""DINO's self-distillation loss with a centred, sharpened teacher.

Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, 2021, arXiv:2104.14294:

    eq. 2-3: min sum_{x in teacher views} sum_{x' in student views, x' != x} H(P_t(x), P_s(x')),
             H(a, b) = -a . log b, P_s = softmax(g_s / tau_s), P_t = softmax((g_t - c) / tau_t)
    eq. 4:   c <- m c + (1 - m) * mean of the batch's teacher outputs (all views)

No gradient reaches the teacher. The loss is the mean over the (teacher, student) view pairs with
different indices and over the batch, as the paper's code, solo-learn and lightly. Defaults:
solo-learn's CIFAR values (student tau 0.1, teacher tau 0.07 constant, centre momentum 0.9).
Sources: docs/sources.md section 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from repro.losses.shared import at_least_float32, check_shapes, full_precision


def _stack_views(views: list[Tensor], name: str) -> Tensor:
    check_shapes(views, f"{name} view")
    return torch.stack(views)


@full_precision
def dino_loss(student_out: list[Tensor], teacher_out: list[Tensor], center: Tensor, *,
              student_temperature: float = 0.1,
              teacher_temperature: float = 0.07) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy of the student's views against the teacher's other views.

    student_out: S tensors (N, P) of student head outputs (the first len(teacher_out) must be the
    same views as the teacher's, any further ones are extra crops); teacher_out: T tensors (N, P);
    center: the current centre, P values in any shape (e.g. (P,) or (1, P)). The teacher side is
    detached. Returns (loss, terms); terms["teacher_entropy"] is the mean entropy of the teacher's
    distribution (0 = one-hot collapse, log P = uniform collapse).
    """
    student = _stack_views(student_out, "student_out")                  # (S, N, P)
    teacher = _stack_views(teacher_out, "teacher_out")                  # (T, N, P)
    if student.shape[1:] != teacher.shape[1:] or center.numel() != teacher.shape[-1]:
        raise ValueError(f"student views {tuple(student.shape[1:])}, teacher views "
                         f"{tuple(teacher.shape[1:])} and center {tuple(center.shape)} must agree")
    num_teacher, num_student = teacher.shape[0], student.shape[0]
    if num_teacher > num_student or num_student < 2:
        raise ValueError(f"need at least 2 student views and no more teacher views than student "
                         f"views, got {num_teacher} teacher and {num_student} student views")
    teacher_probs = F.softmax(
        (at_least_float32(teacher.detach()) - at_least_float32(center.detach()).reshape(-1)) / teacher_temperature, dim=-1)
    student_log_probs = F.log_softmax(at_least_float32(student) / student_temperature, dim=-1)
    # cross[t, s] = sum over the batch of H(P_t(view t), P_s(view s))
    cross = -torch.einsum("tnp,snp->ts", teacher_probs, student_log_probs)
    same_view = torch.eye(num_teacher, num_student, dtype=torch.bool, device=cross.device)
    num_pairs = num_teacher * num_student - num_teacher
    loss = cross.masked_fill(same_view, 0.0).sum() / (num_pairs * student.shape[1])
    teacher_entropy = -(teacher_probs * torch.log(teacher_probs.clamp_min(1e-30))).sum(-1).mean()
    return loss, {"loss": loss.detach(), "teacher_entropy": teacher_entropy.detach()}


@torch.no_grad()
def update_center(center: Tensor, teacher_out: list[Tensor], momentum: float = 0.9) -> Tensor:
    """New centre = momentum * center + (1 - momentum) * mean of all teacher outputs (all views).

    Returns a new tensor of center's shape and dtype. Per process: under data parallelism the batch
    mean should be averaged across processes (the paper all-reduces it); one GPU needs nothing.
    """
    teacher = _stack_views(teacher_out, "teacher_out")
    if center.numel() != teacher.shape[-1]:
        raise ValueError(f"center {tuple(center.shape)} must hold one value per output dimension "
                         f"{teacher.shape[-1]}")
    batch_center = at_least_float32(teacher).mean(dim=(0, 1))
    new_center = momentum * at_least_float32(center) + (1 - momentum) * batch_center.reshape(center.shape)
    return new_center.to(center.dtype)
