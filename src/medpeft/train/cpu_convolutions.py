"""Route the 3D convolutions of a float32 CPU training step through oneDNN's fast paths.

PyTorch sends a CPU float32 3D convolution of one sample whose N*C*D*H is at most 20,480 (its
``use_mkldnn`` heuristic) to its native ``slow_conv3d`` kernels. Their backward is 2-4x slower
than oneDNN's on the deep layers of a 64-voxel crop (12 channels at 32x32x16: 88 against 21 ms,
forward and backward, one thread). Handing such a convolution a oneDNN (mkldnn) tensor makes
PyTorch use oneDNN, with autograd intact; the results agree to float32 rounding. The larger
convolutions, which PyTorch already gives oneDNN, run faster on channels-last inputs and weights
(12 channels at 64x64x32: 120 against 219 ms, one thread). Together: 1.2-1.4x a float32 step
of decoder-skips, full fine-tuning and scratch training (docs/scaling-up.md "Float32 on CPUs without native
bf16"). Under native bf16 PyTorch uses oneDNN already, so this only matters where training runs
in float32 on a CPU.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from medpeft.device import precision

SLOW_PATH_LIMIT = 20480  # PyTorch's N*C*D*H bound under which a one-sample conv takes slow_conv3d


def takes_slow_path(conv: torch.nn.modules.conv._ConvNd, x: torch.Tensor) -> bool:
    """Whether PyTorch would run ``conv`` on ``x`` with its native kernels (CPU, float32, one
    sample, few channels x rows) and oneDNN can take it instead (zero padding given as numbers)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 5
            and not x.is_mkldnn and x.shape[0] == 1
            and x.shape[1] * x.shape[2] * x.shape[3] <= SLOW_PATH_LIMIT
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def _conv_forward(conv: torch.nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    if not takes_slow_path(conv, x):
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 5:
            return type(conv).forward(conv, x)
        channels_last = x.contiguous(memory_format=torch.channels_last_3d)  # oneDNN's fast layout
        return type(conv).forward(conv, channels_last).contiguous()
    return F.conv3d(x.to_mkldnn(), conv.weight, conv.bias, conv.stride, conv.padding,
                    conv.dilation, conv.groups).to_dense()


def _transposed_forward(conv: torch.nn.ConvTranspose3d, x: torch.Tensor,
                        output_size: list[int] | None = None) -> torch.Tensor:
    if output_size is not None or not takes_slow_path(conv, x):
        return type(conv).forward(conv, x, output_size)
    return F.conv_transpose3d(x.to_mkldnn(), conv.weight, conv.bias, conv.stride, conv.padding,
                              conv.output_padding, conv.groups, conv.dilation).to_dense()


def pays_on(device: torch.device, *, bf16: bool) -> bool:
    """Whether training on ``device`` runs its convolutions in float32 on a CPU: where routing
    them pays (under native bf16 PyTorch uses oneDNN already)."""
    return device.type == "cpu" and precision(device, bf16) == "float32"


def route_convolutions(model: torch.nn.Module) -> None:
    """Run ``model``'s 3D convolutions on oneDNN from now on: the small ones as oneDNN tensors,
    the others in a channels-last layout (their weights kept in it, so that weight gradients need
    no reordering), every output back in the default layout for the layers between;
    ``unroute_convolutions`` undoes it."""
    for module in model.modules():
        if type(module) is torch.nn.Conv3d:
            module.forward = _conv_forward.__get__(module)
        elif type(module) is torch.nn.ConvTranspose3d:
            module.forward = _transposed_forward.__get__(module)
        else:
            continue
        module.to(memory_format=torch.channels_last_3d)


def unroute_convolutions(model: torch.nn.Module) -> None:
    """Leave ``model``'s convolutions as PyTorch made them (default forward and layout)."""
    for module in model.modules():
        if "forward" in vars(module) and type(module) in (torch.nn.Conv3d, torch.nn.ConvTranspose3d):
            del module.forward
            module.to(memory_format=torch.contiguous_format)


@contextmanager
def onednn_convolutions(model: torch.nn.Module, *, enabled: bool = True) -> Iterator[None]:
    """``route_convolutions`` within the block (where ``enabled``)."""
    if enabled:
        route_convolutions(model)
    try:
        yield
    finally:
        if enabled:
            unroute_convolutions(model)
