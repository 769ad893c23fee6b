"""Place adapter sites into a backbone by glob patterns over module names."""
from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Callable

from torch import nn

from medpeft.adapters.base import AdapterSite


def match_modules(model: nn.Module, patterns: list[str], kind: type | None = None) -> list[str]:
    """Names of modules matching any glob pattern (optionally only of a given type)."""
    return [name for name, module in model.named_modules()
            if any(fnmatchcase(name, p) for p in patterns)
            and (kind is None or isinstance(module, kind))]


def inject(model: nn.Module, patterns: list[str], factory: Callable[[nn.Module, str], AdapterSite],
           kind: type | None = None) -> list[AdapterSite]:
    """Wrap every module matching ``patterns`` with ``factory(module, name)``; returns the sites."""
    names = match_modules(model, patterns, kind)
    if not names:
        raise ValueError(f"no module matches {patterns}")
    sites = []
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        site = factory(getattr(parent, child), name)
        setattr(parent, child, site)
        sites.append(site)
    return sites
