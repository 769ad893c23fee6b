"""What a medpeft process does before anything imports MONAI: skip the optional packages it never uses.

``import monai`` imports every MONAI module, and each imports its optional dependencies when they
are installed: transformers (one network, Transchex; installed beside HF peft), pytorch-ignite
(MONAI's engines; the ``bundle`` extra), pandas (MONAI's profiling), scikit-learn (one metric) and
``scipy.signal`` (the ultrasound confidence map). medpeft uses none of them in its own processes
(nnU-Net, which does, runs in processes of its own), yet with transformers and ignite installed a
process took 12 s of CPU to import the federated app against 7.6 s without them (x86_64 Xeon, one
thread); the last three cost another 1.8 s of its 7.8 s (AMD EPYC, 4 runs each). A Flower
ClientApp pays that per message (Flower starts one process per message), and so does every
torchrun rank and side-by-side worker. The entry points of such processes (the ``medpeft``
command, the deployment's Flower components, each simulation actor through Ray's worker set-up
hook) call :func:`skip_unused_optional_packages` first.
It marks the packages absent the way Python documents (``sys.modules[name] = None``), and
MONAI's ``optional_import`` then treats them as not installed. A process that already imported
one (it needs it) keeps it.
"""
from __future__ import annotations

import sys

UNUSED_OPTIONAL = ("transformers", "ignite", "pandas", "sklearn", "scipy.signal")


def skip_unused_optional_packages() -> None:
    """Mark :data:`UNUSED_OPTIONAL` absent for this process, unless already imported."""
    for name in UNUSED_OPTIONAL:
        sys.modules.setdefault(name, None)
