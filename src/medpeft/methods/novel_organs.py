"""Organs the foundation model never saw: new output channels of its head (``model.out``).

A novel organ gets one more row in the 1x1x1 head convolution. Its initialisation:

- ``random``: PyTorch's default initialisation of a convolution row (seeded by the caller);
- ``prototype``: the organ-vs-background prototype direction, from the mean head-input feature
  of each in the support crops (mu_o, mu_b): the new row is the background row plus
  ``s (mu_o - mu_b)``, ``s`` setting the logit gap between the two means to twice the margin (2).
  Its bias makes the row claim, on the support crops, exactly the share of voxels labelled as the
  organ. The nearest-prototype midpoint claimed 100-200x that share on the phantom (a background
  of many tissues has a mean far from most of them), and decoder tuning at 3e-3 for 80 steps
  then collapsed the row to nothing at K = 5 and 10.

Every adaptation method trains the head, so the new rows train whatever else the method trains
(``head``: the rows alone; ``decoder``: the decoder with them).
"""
from __future__ import annotations

import torch
from torch import nn

from medpeft.data.ontology import resolve
from medpeft.methods.prototypes import claim_threshold, class_means, voxel_features

RANDOM, PROTOTYPE = "random", "prototype"
INITS = (RANDOM, PROTOTYPE)
MARGIN = 2.0


def head_conv(model: nn.Module) -> nn.Conv3d:
    """The 1x1x1 convolution of a foundation's head ``model.out``."""
    return next(m for m in model.out.modules() if isinstance(m, nn.Conv3d))


def _set_head_conv(model: nn.Module, conv: nn.Conv3d) -> None:
    parent = model.out
    path = [n for n, m in model.out.named_modules() if m is head_conv(model)][0].split(".")
    for name in path[:-1]:
        parent = getattr(parent, name)
    setattr(parent, path[-1], conv)


def task_classes(known: tuple[str, ...], organs: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The organs a task segments: ``organs`` by ontology name or alias ("all": every organ of
    ``known``, the foundation's classes); none given means ``known``."""
    if not organs:
        return tuple(known)
    task: list[str] = []
    for name in organs:
        found = known if name == "all" else resolve(name)
        if not found:
            raise ValueError(f"unknown organ {name!r}: use an ontology name or alias "
                             "(medpeft inspect data lists a dataset's), or 'all'")
        task += [o for o in found if o not in task]
    return tuple(task)


def lower_background(model: nn.Module, offset: float) -> None:
    """Take ``offset`` off the head's background logit (its bias): a voxel the model was unsure
    of leans to the organs, the same at every voxel, so the adapter's file carries it."""
    with torch.no_grad():
        head_conv(model).bias[0] -= offset


def set_head_classes(model: nn.Module, classes: tuple[str, ...], task: tuple[str, ...]) -> None:
    """Re-shape the head of ``model`` (trained for ``classes``) to segment ``task``'s organs.

    Background and every organ the model knows keep their pretrained rows; an organ it does not
    know gets a randomly initialised row (channel i + 1 = ``task[i]``). A task of one organ is the
    binary segmentation of that organ.
    """
    old = head_conv(model)
    if old.out_channels != len(classes) + 1:
        raise ValueError(f"the head has {old.out_channels} outputs, not background + "
                         f"{len(classes)} classes")
    if len(set(task)) != len(task) or not task:
        raise ValueError(f"a task lists each organ once: {list(task)}")
    if tuple(task) == tuple(classes):
        return
    conv = nn.Conv3d(old.in_channels, len(task) + 1, 1).to(old.weight.device)
    with torch.no_grad():
        for row, source in enumerate((None, *task)):
            if source is None or source in classes:
                i = 0 if source is None else classes.index(source) + 1
                conv.weight[row] = old.weight[i]
                conv.bias[row] = old.bias[i]
    conv.weight.requires_grad_(old.weight.requires_grad)
    conv.bias.requires_grad_(old.bias.requires_grad)
    _set_head_conv(model, conv)


@torch.no_grad()
def head_inputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The features ``model`` feeds its head for ``images`` (B, 1, ...), in eval mode."""
    seen: list[torch.Tensor] = []
    handle = model.out.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    was_training = model.training
    try:
        model.eval()
        model(images)
    finally:
        handle.remove()
        model.train(was_training)
    return seen[0]


@torch.no_grad()
def prototype_rows(model: nn.Module, crops, channels: dict[int, int]) -> None:
    """Set head rows to the organ-vs-background prototype rule of the support ``crops``.

    ``crops``: batches with ``image`` (B, 1, ...) and local ``label`` (B, 1, ...);
    ``channels``: head channel -> the local class of those labels it stands for.
    """
    feats, labels = [], []
    for batch in crops:
        feats.append(voxel_features(head_inputs(model, batch["image"].float())))
        labels.append(batch["label"].reshape(-1))
    feats, labels = torch.cat(feats), torch.cat(labels)
    means = class_means(feats, labels)
    conv = head_conv(model)
    mu_b = means[0]
    for channel, cls in channels.items():
        if cls not in means:
            raise ValueError(f"no support voxel of head channel {channel}: a novel organ needs "
                             "labelled support volumes for its prototype")
        direction = means[cls] - mu_b
        direction = direction * (2 * MARGIN / float(direction.pow(2).sum().clamp_min(1e-8)))
        conv.weight[channel] = conv.weight[0] + direction.view(-1, 1, 1, 1)
        conv.bias[channel] = conv.bias[0] - claim_threshold(feats @ direction, labels == cls)
