"""Float32 CPU training routes the 3D convolutions PyTorch would run on its slow native kernels
through oneDNN: same outputs and gradients, no slow_conv3d left, the model given back as it came."""
from __future__ import annotations

import torch
from torch.profiler import profile

from medpeft.train import loop
from medpeft.train.cpu_convolutions import (
    onednn_convolutions,
    route_convolutions,
    takes_slow_path,
    unroute_convolutions,
)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(  # a full-resolution conv, a deep one (slow path), an upsampling
        torch.nn.Conv3d(1, 12, 3, padding=1), torch.nn.Conv3d(12, 12, 3, stride=2, padding=1),
        torch.nn.Conv3d(12, 12, 3, padding=1), torch.nn.InstanceNorm3d(12),
        torch.nn.ConvTranspose3d(12, 4, 2, stride=2))


def _gradients(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict, set[str]]:
    net.zero_grad()
    with profile() as prof:
        out = net(x)
        out.square().mean().backward()
    ops = {e.key for e in prof.key_averages()}
    return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}, ops


def test_routed_convolutions_compute_the_same_without_the_slow_kernels():
    net, x = _net(), torch.randn(1, 1, 32, 32, 16)
    assert takes_slow_path(net[2], torch.zeros(1, 12, 16, 16, 8))
    assert not takes_slow_path(net[2], torch.zeros(2, 12, 16, 16, 8))  # PyTorch uses oneDNN
    plain, plain_grads, plain_ops = _gradients(net, x)
    assert "aten::slow_conv3d_forward" in plain_ops  # what the routing is for
    with onednn_convolutions(net):
        assert all("forward" in vars(m) for m in net if not isinstance(m, torch.nn.InstanceNorm3d))
        assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
        routed, routed_grads, routed_ops = _gradients(net, x)
    assert not {"aten::slow_conv3d_forward", "aten::slow_conv_transpose3d"} & routed_ops
    assert routed.is_contiguous() and torch.allclose(routed, plain, atol=1e-5, rtol=1e-4)
    for name, grad in plain_grads.items():
        assert torch.allclose(routed_grads[name], grad, atol=1e-6, rtol=1e-3), name
    assert not any("forward" in vars(m) for m in net)  # given back as it came
    assert all(p.is_contiguous() for p in net.parameters())


def test_the_loop_routes_only_where_it_trains_in_float32_on_a_cpu(monkeypatch):
    import medpeft.device as device_module
    calls = []
    monkeypatch.setattr(loop, "route_convolutions", lambda m: calls.append(m) or route_convolutions(m))
    cfg = loop.LoopConfig(steps=1, bf16=True)
    for native in (True, False):
        monkeypatch.setattr(device_module, "supports_bf16", lambda device, native=native: native)
        net = _net()
        loop._place(net, cfg, torch.device("cpu"))
        assert len(calls) == (0 if native else 1)
    assert "forward" in vars(net[2])
    unroute_convolutions(net)
    assert "forward" not in vars(net[2]) and net[2].weight.is_contiguous()
