"""A CT "site": how one scanner and protocol turn a subject's tissues into a NIfTI volume.

Sites differ the way real hospitals do (see ``shared/design/PHANTOM.md``): contrast phase (tissue
HU), dose (noise), reconstruction kernel (blur and noise texture), calibration (HU offset/scale),
voxel spacing and slice thickness, field of view and patient position, and on-disk orientation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from medpeft.data.phantom.anatomy import TISSUES, Grid, render_subject

PHASES = ("non-contrast", "arterial", "portal-venous")

# Mean HU per tissue and phase (non-contrast, arterial, portal-venous), after PHANTOM.md.
_HU: dict[str, tuple[float, float, float]] = {
    "air": (-1000, -1000, -1000), "skin": (40, 45, 50), "fat": (-100, -100, -100),
    "muscle": (50, 58, 60), "bowel": (30, 55, 70), "gas": (-950, -950, -950),
    "cortical_bone": (850, 850, 850), "cancellous_bone": (260, 265, 270), "disc": (85, 90, 95),
    "liver": (60, 78, 112), "spleen": (47, 135, 116), "kidney_cortex": (33, 215, 175),
    "kidney_medulla": (30, 80, 125), "pancreas": (45, 120, 100), "gallbladder": (10, 10, 12),
    "stomach_wall": (35, 75, 85), "stomach_fluid": (10, 10, 12), "aorta": (45, 320, 170),
    "inferior_vena_cava": (40, 75, 140), "urinary_bladder": (6, 6, 8),
}
# Standard deviation of tissue texture (HU), independent of phase.
_TEXTURE: dict[str, float] = {"fat": 12, "bowel": 22, "muscle": 8, "liver": 7, "spleen": 9,
                              "kidney_cortex": 10, "pancreas": 12, "cancellous_bone": 40}


@dataclass(frozen=True)
class Scanner:
    """One scanner + protocol. Spacing is (x, y, z) in mm; orientation is the stored axis codes."""

    name: str
    phase: str = "portal-venous"
    noise_hu: float = 12.0
    kernel_mm: float = 1.0  # in-plane blur (FWHM) of the reconstruction kernel
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)
    hu_offset: float = 0.0
    hu_scale: float = 1.0
    orientation: str = "RAS"
    shift_mm: float = 8.0  # SD of the patient's off-centre position on the table
    z_range: tuple[float, float] = (-215.0, 150.0)
    fov_mm: tuple[float, float] = (390.0, 300.0)
    oral_contrast: bool = False  # positive oral contrast fills stomach and bowel

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"site {self.name}: phase must be one of {PHASES}, not {self.phase!r}")
        if len(self.orientation) != 3 or any(
                {c, o} - set("RLAPSI") for c, o in zip(self.orientation, "RAS")):
            raise ValueError(f"site {self.name}: orientation must be like 'RAS' or 'LPS'")

    def to_dict(self) -> dict:
        return asdict(self)


# Positive (iodinated) oral contrast in the gut lumen, independent of the intravenous phase.
_ORAL_CONTRAST_HU = {"bowel": 230.0, "stomach_fluid": 260.0}


def _hu_lookup(phase: str, oral_contrast: bool = False) -> np.ndarray:
    k = PHASES.index(phase)
    hu = {t: _HU[t][k] for t in TISSUES}
    if oral_contrast:
        hu.update(_ORAL_CONTRAST_HU)
    return np.array([hu[t] for t in TISSUES], dtype=np.float32)


def _texture(rng: np.random.Generator, tissue: np.ndarray) -> np.ndarray:
    """Per-tissue correlated texture (HU) from one smooth random field."""
    field = gaussian_filter(rng.normal(size=tissue.shape).astype(np.float32), 1.2)
    field /= field.std() + 1e-6
    amp = np.array([_TEXTURE.get(t, 0.0) for t in TISSUES], dtype=np.float32)
    return amp[tissue] * field


def _reorient(data: np.ndarray, affine: np.ndarray, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """Store a RAS-ordered array with the requested axis flips; the affine stays the truth."""
    affine = affine.copy()
    for axis, (code, ras) in enumerate(zip(orientation, "RAS")):
        if code != ras:
            data = np.flip(data, axis=axis)
            affine[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
            affine[:3, axis] *= -1
    return np.ascontiguousarray(data), affine


def acquire(site: Scanner, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scan one subject at ``site``: returns (HU int16, organ labels uint8, affine 4x4).

    Deterministic in (site, seed). Arrays are stored in the site's orientation.
    """
    rng = np.random.default_rng(seed)
    sx, sy, sz = site.spacing
    shift = rng.normal(0.0, site.shift_mm, size=2)
    nx, ny = int(round(site.fov_mm[0] / sx)), int(round(site.fov_mm[1] / sy))
    z0, z1 = site.z_range
    nz = int(round((z1 - z0) / sz)) + 1
    scanner_x = (np.arange(nx) - (nx - 1) / 2) * sx
    scanner_y = (np.arange(ny) - (ny - 1) / 2) * sy
    scanner_z = z0 + np.arange(nz) * sz
    # patient coordinates = scanner coordinates minus the patient's offset on the table
    grid = Grid(scanner_x - shift[0], scanner_y - shift[1], scanner_z)
    label, tissue = render_subject(rng, grid)

    hu = _hu_lookup(site.phase, site.oral_contrast)[tissue] + _texture(rng, tissue)
    fwhm_to_sigma = 1.0 / 2.355
    blur = (site.kernel_mm * fwhm_to_sigma / sx, site.kernel_mm * fwhm_to_sigma / sy,
            max(site.kernel_mm, sz) * fwhm_to_sigma / sz)
    hu = gaussian_filter(hu, blur)
    noise = gaussian_filter(rng.normal(size=hu.shape).astype(np.float32), 0.7)
    hu = hu + noise / (noise.std() + 1e-6) * site.noise_hu
    hu = hu * site.hu_scale + site.hu_offset
    image = np.clip(np.round(hu), -1024, 3071).astype(np.int16)

    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = (scanner_x[0], scanner_y[0], scanner_z[0])
    image, new_affine = _reorient(image, affine, site.orientation)
    label, _ = _reorient(label, affine, site.orientation)
    return image, label, new_affine
