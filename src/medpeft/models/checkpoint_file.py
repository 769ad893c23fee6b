"""Reading third-party checkpoint files without running code they might carry.

A ``.pt``/``.pth`` file is a pickle, and unpickling can execute anything. Files are therefore read
with ``torch.load(weights_only=True)`` (tensors, containers, numbers and strings only) plus a
minimal allow-list: numpy scalars and dtypes, which the MONAI BTCV release stores as its
``best_acc``. Anything else is refused before it runs; only an explicit ``trust=True``
(``--trust-checkpoint``) unpickles the file in full, with a warning.
"""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch


class UnsafeCheckpointError(ValueError):
    """A checkpoint file that cannot be read as weights alone; the message names the file."""


def _numpy_allow_list() -> list:
    """numpy's scalar reconstructor and dtype classes, as pickled by numpy 1.x and 2.x."""
    core = getattr(np, "_core", None) or np.core
    dtypes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int32,
                                          np.int64, np.uint8, np.bool_)}
    return [core.multiarray.scalar, np.dtype, *dtypes]


def _refused_global(err: Exception) -> str | None:
    """The object torch refused to build: its message names it after "GLOBAL"."""
    found = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
    return found.group(1) if found else None


def _unpickler_reason(err: Exception) -> str:
    """torch's own one-line reason (after "WeightsUnpickler error:"), else its first line."""
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (found.group(1) if found else lines[0] if lines else type(err).__name__)[:160]


def read_checkpoint(path: str | Path, *, trust: bool = False) -> object:
    """The unpickled contents of ``path`` (on the CPU), read as weights only unless ``trust``.

    Raises :class:`UnsafeCheckpointError` naming the file and the object it refused to build,
    and ``FileNotFoundError`` for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if trust:
        warnings.warn(f"{path}: loading with weights_only=False (--trust-checkpoint): the file may "
                      "run code while it loads; do this only for files from a source you trust",
                      stacklevel=2)
        return torch.load(str(path), map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(_numpy_allow_list()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_global(err)
        if refused is None:
            raise UnsafeCheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                        f"({_unpickler_reason(err)})") from None
        raise UnsafeCheckpointError(
            f"{path}: refused to load as weights only (it would build {refused}, which is not "
            "a tensor or number); pass --trust-checkpoint only if you trust where the file "
            "comes from") from None
    except (RuntimeError, EOFError) as err:
        raise UnsafeCheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                    f"({_unpickler_reason(err)})") from None
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
        # torch's legacy reader on a file that is neither a zip nor a pickle: e.g. a text file
        # starting with "j" gives KeyError on a "magic number" it cannot look up
        raise UnsafeCheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                    f"({type(err).__name__}: {_unpickler_reason(err)})") from None
