"""Partial-label (marginal) Dice + cross-entropy.

A dataset that labels only some organs says nothing about the others: a voxel it calls
"background" may belong to an organ it does not annotate. The marginal loss therefore sums the
model's softmax probabilities of every channel that falls into the same local class of that
dataset (all unlabelled organs fall into its background) before scoring, so unlabelled organs are
never pushed towards background. With a fully labelled dataset it is ordinary Dice + CE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss


def merge_to_local(probs: torch.Tensor, channel_to_local: torch.Tensor) -> torch.Tensor:
    """Sum channel probabilities (B, C, ...) into local classes; ``channel_to_local`` is (B, C)."""
    b, c = probs.shape[:2]
    index = channel_to_local.to(probs.device).view(b, c, *([1] * (probs.dim() - 2)))
    return torch.zeros_like(probs).scatter_add_(1, index.expand_as(probs), probs)


def _is_identity(channel_to_local: torch.Tensor, channels: int) -> bool:
    """Whether every sample maps channel c to local class c (nothing to merge)."""
    return channel_to_local.shape[-1] == channels and bool(
        (channel_to_local.cpu() == torch.arange(channels)).all())


class MarginalDiceCELoss(torch.nn.Module):
    """Dice + CE on probabilities merged into each sample's local classes."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__()
        self.dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=False,
                             smooth_nr=1e-5, smooth_dr=1e-5)
        self.dice_weight, self.ce_weight = dice_weight, ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                channel_to_local: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, C, ...), ``target`` (B, 1, ...) local classes, map (B, C)."""
        target = target.long()
        logits = logits.float()
        if _is_identity(channel_to_local, logits.shape[1]):  # fully labelled: plain Dice + CE
            local = torch.softmax(logits, dim=1)
            ce = F.cross_entropy(logits, target[:, 0])
        else:
            local = merge_to_local(torch.softmax(logits, dim=1), channel_to_local)
            ce = F.nll_loss(torch.log(local.clamp_min(1e-7)), target[:, 0])
        # Dice over each sample's own local classes only (unused padding channels would dilute it)
        n_local = channel_to_local.max(dim=1).values + 1
        dice = torch.stack([self.dice(local[i: i + 1, : int(n)], target[i: i + 1])
                            for i, n in enumerate(n_local)]).mean()
        return self.ce_weight * ce + self.dice_weight * dice
