"""Place adapter sites into a backbone by glob patterns over module names.

A pattern matches the module path (``swinViT.layers1.0.blocks.0.attn.qkv``); modules inside an
existing site (its wrapped ``base`` or its own layers) are never matched, but a site itself is,
so a second kind stacks on the same layer (e.g. LoRA and BitFit on one ``qkv``) with its own
switch.
"""
from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

from torch import nn

from medpeft.adapters.base import AdapterSite, innermost


def _inside_a_site(model: nn.Module) -> Callable[[str], bool]:
    sites = [n for n, m in model.named_modules() if isinstance(m, AdapterSite)]
    return lambda name: any(name.startswith(s + ".") for s in sites)


def match_modules(model: nn.Module, patterns: list[str],
                  accept: Callable[[nn.Module], bool] | None = None) -> list[str]:
    """Names of modules matching any glob pattern whose backbone layer ``accept`` takes."""
    inside = _inside_a_site(model)
    return [name for name, module in model.named_modules()
            if name and not inside(name) and any(fnmatchcase(name, p) for p in patterns)
            and (accept is None or accept(innermost(module)))]


def inject(model: nn.Module, patterns: list[str], factory: Callable[[nn.Module, str], AdapterSite],
           accept: Callable[[nn.Module], bool] | None = None) -> list[AdapterSite]:
    """Wrap every module matching ``patterns`` with ``factory(module, name)``; returns the sites."""
    names = match_modules(model, patterns, accept)
    if not names:
        raise ValueError(f"no module matches {patterns}")
    sites = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        site = factory(getattr(parent, child), name)
        if any(s.name == site.name for s in _stack(getattr(parent, child))):
            raise ValueError(f"{site.name}: this layer already has a {site.kind} site")
        setattr(parent, child, site)
        sites.append(site)
    return sites


def _stack(module: nn.Module) -> list[AdapterSite]:
    out = []
    while isinstance(module, AdapterSite):
        out.append(module)
        module = module.base
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """Replace every site by its merged plain module (in place); raises if a kind cannot merge."""
    for name, module in reversed(list(model.named_modules())):
        if isinstance(module, AdapterSite):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.merged())
    return model
