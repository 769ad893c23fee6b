"""What a medpeft process does before anything imports MONAI: skip the optional packages it never uses.

``import monai`` imports every MONAI module, and each imports its optional dependencies when they
are installed: transformers (one network, Transchex; installed beside HF peft) and pytorch-ignite
(MONAI's engines; the ``bundle`` extra). medpeft uses neither in its own processes, yet with both
installed a process took 12 s of CPU to import the federated app against 7.6 s without them
(x86_64 Xeon, one thread). A Flower ClientApp pays that per message (Flower starts one process per
message), and so does every torchrun rank. The entry points of such processes (the ``medpeft``
command, the deployment's Flower components, each simulation actor through Ray's worker set-up
hook) call :func:`skip_unused_optional_packages` first.
It marks the packages absent the way Python documents (``sys.modules[name] = None``), and
MONAI's ``optional_import`` then treats them as not installed. A process that already imported
one (it needs it) keeps it.
"""
from __future__ import annotations

import sys

UNUSED_OPTIONAL = ("transformers", "ignite")


def skip_unused_optional_packages() -> None:
    """Mark :data:`UNUSED_OPTIONAL` absent for this process, unless already imported."""
    for name in UNUSED_OPTIONAL:
        sys.modules.setdefault(name, None)
