"""Is an image one 3D volume? The model slides a 3D window over it; anything else either fails deep
inside MONAI with a message about tensor dimensions (a 2D image, a 4D series) or, worse, is
segmented as if it were a volume (a single slice, padded to the window: organs found in noise).

A NIfTI written as (X, Y, Z, 1) is one volume (some converters add the singleton axis); more
frames (a 4D perfusion or multi-phase series) are several volumes in one file, which medpeft does
not pick between for the user.
"""
from __future__ import annotations

import numpy as np

MIN_VOXELS_PER_AXIS = 2  # one voxel along an axis is a slice (or a line), not a volume


def volume_shape_problem(shape: tuple[int, ...], source: object) -> str | None:
    """Why an image of ``shape`` (read from ``source``) is not one 3D volume, or None if it is."""
    shape = tuple(int(n) for n in shape)
    if len(shape) < 3:
        return f"{source}: a {len(shape)}D image {shape}; medpeft segments 3D CT volumes"
    if any(n != 1 for n in shape[3:]):
        return (f"{source}: a {len(shape)}D image {shape}, {int(np.prod(shape[3:]))} volumes in one "
                "file; write the one to segment as a 3D NIfTI")
    thin = [axis for axis, n in enumerate(shape[:3]) if n < MIN_VOXELS_PER_AXIS]
    if thin:
        return (f"{source}: shape {shape[:3]} has a single voxel along axis {thin[0]}: a slice, "
                "not a volume; medpeft segments 3D CT volumes")
    return None
