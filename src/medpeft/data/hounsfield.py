"""Is an image a CT in Hounsfield units? The model reads HU through a fixed window, so a volume
in other units is not an error anywhere downstream: it is silently segmented as noise.

Every abdominal CT holds fat (about -100 HU) and, around the body, air (-1000 HU). A volume with
no voxel below -50 holds neither, which happens when a converter stored the scanner's raw values
without the rescale intercept (air at 0 instead of -1024), when the image was normalised, or
when it is not a CT (MR intensities are positive). NaN or infinite voxels (written by some
converters outside the field of view) would turn every window they touch into NaN.
"""
from __future__ import annotations

import numpy as np
from monai.transforms import MapTransform

from medpeft.data.volume_shape import volume_shape_problem

NO_AIR_OR_FAT_ABOVE_HU = -50.0


def hounsfield_problem(values: np.ndarray, source: object) -> str | None:
    """Why ``values`` (a CT's voxels, read from ``source``) are not in HU, or None if they may be."""
    values = np.asarray(values)
    lowest, highest = float(values.min()), float(values.max())  # NaN or infinite if any voxel is
    if not (np.isfinite(lowest) and np.isfinite(highest)):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        return f"{source}: {bad} voxel(s) are NaN or infinite; a CT's voxels are all numbers"
    if lowest <= NO_AIR_OR_FAT_ABOVE_HU:
        return None
    if highest > 1000:
        likely = "the scanner's stored values without the rescale intercept (often -1024)"
    elif highest <= 10:
        likely = "a normalised image"
    else:
        likely = "not a CT"
    return (f"{source}: no voxel below {NO_AIR_OR_FAT_ABOVE_HU:g} (values {lowest:g} to "
            f"{highest:g}), so no air or fat: not a CT in Hounsfield units; likely {likely}")


class RequireCTVolumed(MapTransform):
    """Refuse, naming the file, an image that is not one 3D volume
    (:func:`medpeft.data.volume_shape.volume_shape_problem`) or not in HU
    (:func:`hounsfield_problem`): either would otherwise fail deep in MONAI or be segmented as noise."""

    def __call__(self, data: dict) -> dict:
        for key in self.key_iterator(data):
            values = np.asarray(data[key])
            source = getattr(data[key], "meta", {}).get("filename_or_obj", key)
            problem = volume_shape_problem(values.shape, source) or hounsfield_problem(values, source)
            if problem:
                raise ValueError(problem)
        return data
