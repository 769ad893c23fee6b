"""The sealed foundation model: a call from CT patches to last-decoder features, nothing more.

:class:`FeatureService` is what the black-box adapters see: calling it returns features computed
in eval mode under ``no_grad`` (so no gradient can reach the model), and it exposes neither
parameters nor a state dict. It can wrap a medpeft foundation (the features entering its head), a
TorchScript file or an ONNX file that returns features (``--blackbox``).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


class FeatureService:
    """Features of a model that is only called. ``channels``: feature channels it returns.

    The service is a proxy whose only operations are the call and reading ``channels``, ``name``
    and ``device``: any other attribute (the model, its parameters, buffers, state dict, the
    wrapped callable) raises ``AttributeError``, and copying or pickling raises ``TypeError``.
    This seals the interface the adapters are written against, within one Python process; it is
    not a security boundary (code in the same interpreter can still find the model, e.g. via gc).
    """

    _PUBLIC = frozenset({"channels", "name", "device", "__call__", "__class__", "__repr__",
                         "__reduce_ex__", "__reduce__"})

    def __init__(self, call: Callable[[torch.Tensor], torch.Tensor], channels: int, name: str,
                 device: str | torch.device = "cpu"):
        object.__setattr__(self, "_call", call)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "device", torch.device(device))

    def __getattribute__(self, attr: str):
        if attr not in FeatureService._PUBLIC:
            raise AttributeError(f"the black-box feature service is sealed: {attr!r} cannot be "
                                 "read; it can only be called")
        return object.__getattribute__(self, attr)

    def __setattr__(self, attr: str, value) -> None:
        raise AttributeError(f"the black-box feature service is sealed: {attr!r} cannot be set")

    def __reduce_ex__(self, protocol):
        raise TypeError("the black-box feature service is sealed: it cannot be copied or pickled")

    def __reduce__(self):
        raise TypeError("the black-box feature service is sealed: it cannot be copied or pickled")

    def __repr__(self) -> str:
        return f"FeatureService({object.__getattribute__(self, 'name')!r}, sealed)"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` (B, 1, D, H, W), returned on ``x``'s device, detached."""
        call = object.__getattribute__(self, "_call")
        with torch.no_grad():
            out = call(x.to(object.__getattribute__(self, "device")))
        return out.detach().to(x.device)


def foundation_service(model: nn.Module, device: str | torch.device = "cpu") -> FeatureService:
    """The features a SwinUNETR / U-Net foundation passes to its head (``model.out``).

    The model is put in eval mode once; a forward hook on its head records the head's input, so the
    service owner's network is run as it is, and the adapter never holds a reference to it.
    """
    model.to(device).eval()
    seen: list[torch.Tensor] = []
    model.out.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    channels = next(m for m in model.out.modules() if isinstance(m, nn.Conv3d)).in_channels

    def call(x: torch.Tensor) -> torch.Tensor:
        seen.clear()
        model(x)
        return seen.pop()
    return FeatureService(call, channels, type(model).__name__, device)


def load_service(path: str | Path, channels: int | None = None) -> FeatureService:
    """A features-only model from a file: TorchScript (``.pt``/``.ts``) or ONNX (``.onnx``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such black-box model file")
    if path.suffix == ".onnx":
        try:
            import onnxruntime
        except ImportError as err:
            raise ValueError(f"{path}: ONNX models need onnxruntime (pip install onnxruntime)") from err
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def call(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: x.cpu().numpy()})[0]).to(x.device)
    else:
        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as err:
            raise ValueError(f"{path}: not a TorchScript model ({err})") from err
        call = module
    if channels is None:
        channels = FeatureService(call, 0, path.name)(torch.zeros(1, 1, 32, 32, 32)).shape[1]
    return FeatureService(call, channels, path.name)
