"""Abdominal anatomy of one synthetic subject, rendered on a world-coordinate grid (RAS+, mm).

Each structure is an implicit shape (ellipsoid, tube, polyline tube) with per-subject size,
position and a smooth low-frequency deformation, so that no two subjects share a shape. The
renderer returns an organ label volume (canonical ids from :mod:`medpeft.data.ontology`) and a
tissue volume (indices into :data:`TISSUES`); the scanner turns tissues into Hounsfield units.
Coordinates: +x = patient's right, +y = anterior, +z = superior; z = 0 near the renal hila.
"""
from __future__ import annotations

import numpy as np

from medpeft.data.ontology import ORGAN_ID

TISSUES: tuple[str, ...] = (
    "air", "skin", "fat", "muscle", "bowel", "gas", "cortical_bone", "cancellous_bone", "disc",
    "liver", "spleen", "kidney_cortex", "kidney_medulla", "pancreas", "gallbladder",
    "stomach_wall", "stomach_fluid", "aorta", "inferior_vena_cava", "urinary_bladder",
)
T = {name: i for i, name in enumerate(TISSUES)}


class Grid:
    """World coordinates of voxel centres as broadcastable axis vectors (x, y, z in mm)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        self.x = x.astype(np.float32)[:, None, None]
        self.y = y.astype(np.float32)[None, :, None]
        self.z = z.astype(np.float32)[None, None, :]
        self.shape = (x.size, y.size, z.size)


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random small rotation matrix (angles uniform in +-max_deg about each axis)."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(np.float32)


def _local(g: Grid, centre, rot: np.ndarray | None):
    """Offsets from ``centre`` in the structure's own (rotated) frame."""
    d = (g.x - centre[0], g.y - centre[1], g.z - centre[2])
    if rot is None:
        return d
    return tuple(rot[0, i] * d[0] + rot[1, i] * d[1] + rot[2, i] * d[2] for i in range(3))


def _wobble(rng: np.random.Generator, g: Grid, amplitude: float) -> np.ndarray:
    """Smooth random deformation: a sum of three plane waves of 50-130 mm wavelength."""
    field = np.zeros(g.shape, dtype=np.float32)
    for _ in range(3):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / rng.uniform(50, 130) * direction
        phase = rng.uniform(0, 2 * np.pi)
        field = field + rng.uniform(0.4, 1.0) * amplitude * np.sin(
            k[0] * g.x + k[1] * g.y + k[2] * g.z + phase)
    return field


def ellipsoid(g: Grid, centre, radii, rot=None) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipsoid."""
    u, v, w = _local(g, centre, rot)
    return np.sqrt((u / radii[0]) ** 2 + (v / radii[1]) ** 2 + (w / radii[2]) ** 2)


def polyline_distance(g: Grid, points: np.ndarray) -> np.ndarray:
    """Distance (mm) from every voxel to a polyline through ``points`` (n x 3)."""
    best = np.full(g.shape, np.inf, dtype=np.float32)
    for a, b in zip(points[:-1], points[1:]):
        ab = (b - a).astype(np.float32)
        dx, dy, dz = g.x - a[0], g.y - a[1], g.z - a[2]
        t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / float(ab @ ab), 0.0, 1.0)
        dist = np.sqrt((dx - t * ab[0]) ** 2 + (dy - t * ab[1]) ** 2 + (dz - t * ab[2]) ** 2)
        best = np.minimum(best, dist)
    return best


class _Subject:
    """One subject being rendered: its random draws, body size and the two volumes it fills.
    The stages below draw from ``rng`` in a fixed order, so a seed always renders the same body."""

    def __init__(self, rng: np.random.Generator, g: Grid):
        self.rng, self.g = rng, g
        self.s = float(np.clip(rng.normal(1.0, 0.06), 0.88, 1.12))  # body size
        self.ay = 108.0 * self.s  # the body's half-depth (mm, anterior-posterior)
        self.label = np.zeros(g.shape, np.uint8)
        self.tissue = np.full(g.shape, T["air"], np.uint8)
        self.body: np.ndarray | None = None  # inside the skin; set by _body_wall
        self.cavity: np.ndarray | None = None  # the visceral cavity; set by _body_wall
        self.spine_y = 0.0  # set by _spine_and_pelvis

    def jitter(self, mm: float = 6.0) -> np.ndarray:
        return self.rng.normal(0.0, mm, size=3).astype(np.float32)

    def scale(self, sd: float = 0.1) -> float:
        return float(self.s * np.clip(self.rng.normal(1.0, sd), 1 - 2.5 * sd, 1 + 2.5 * sd))

    def place(self, name: str, mask: np.ndarray, tissue_name: str | None = None) -> None:
        """Label an organ inside the visceral cavity (later organs win overlaps)."""
        mask = mask & self.cavity
        self.label[mask] = ORGAN_ID[name]
        self.tissue[mask] = T[tissue_name or name]


def _body_wall(b: _Subject) -> None:
    """Skin, subcutaneous fat, muscle wall and the visceral cavity with bowel, fat and gas."""
    g, s, rng, tissue = b.g, b.s, b.rng, b.tissue
    ax, ay = 150.0 * s, b.ay
    fat = float(rng.uniform(8, 38))
    waist = 1.0 + 0.04 * np.sin(g.z / 90.0)
    r_body = np.sqrt((g.x / (ax * waist)) ** 2 + (g.y / (ay * waist)) ** 2)
    r_mm = (1.0 - r_body) * ay  # approximate depth under the skin (mm)
    b.body = body = r_body < 1.0
    tissue[body] = T["skin"]
    tissue[body & (r_mm > 2.5)] = T["fat"]
    tissue[body & (r_mm > 2.5 + fat)] = T["muscle"]
    b.cavity = body & (r_mm > 2.5 + fat + 10.0)
    # bowel loops and mesenteric fat fill the cavity; a few gas pockets
    loops = _wobble(rng, g, 1.0) + 0.6 * np.sin(g.x / 9.0 + rng.uniform(0, 6)) * np.cos(g.y / 11.0)
    tissue[b.cavity] = np.where(loops[b.cavity] > -0.1, T["bowel"], T["fat"])
    tissue[b.cavity & (loops > 1.45)] = T["gas"]


def _spine_and_pelvis(b: _Subject) -> None:
    """Vertebrae (labelled), discs, paraspinal and psoas muscles, iliac wings (not labelled)."""
    g, s, rng, tissue, ay, body = b.g, b.s, b.rng, b.tissue, b.ay, b.body
    b.spine_y = spine_y = -ay + 58.0 * s
    sx = float(rng.normal(0, 3))
    paraspinal = (((g.x - 38 * s) / (24 * s)) ** 2 + ((g.y - (-ay + 28 * s)) / (17 * s)) ** 2 < 1) | (
        ((g.x + 38 * s) / (24 * s)) ** 2 + ((g.y - (-ay + 28 * s)) / (17 * s)) ** 2 < 1)
    tissue[paraspinal & body] = T["muscle"]
    psoas_r = np.clip(8 + (20 - g.z) * 0.08, 0, 24) * (g.z < 20)
    for side in (1, -1):
        psoas = (g.x - side * (30 + psoas_r)) ** 2 + (g.y - spine_y - 4) ** 2 < psoas_r**2 + 1e-3
        tissue[psoas & body] = T["muscle"]
    vb = ((g.x - sx) / (22 * s)) ** 2 + ((g.y - spine_y) / (18 * s)) ** 2
    level = np.mod(g.z + rng.uniform(0, 32), 32.0)
    disc = level < 7.0
    posterior = ((g.x - sx) / (10 * s)) ** 2 + ((g.y - spine_y + 30 * s) / (15 * s)) ** 2 < 1
    bone = ((vb < 1) | posterior) & (g.z > -150)
    shell = bone & ~((vb < 0.78) | (posterior & (np.abs(g.x - sx) < 6)))
    tissue[bone] = T["cancellous_bone"]
    tissue[shell] = T["cortical_bone"]
    tissue[(vb < 1) & disc & (g.z > -150)] = T["disc"]
    b.label[bone & ~((vb < 1) & disc)] = ORGAN_ID["vertebrae"]
    for side in (1, -1):  # iliac wings: bone, but not labelled
        ilium = ellipsoid(g, (side * 100 * s, -35 * s, -150), (14 * s, 55 * s, 45), _rotation(rng, 8))
        tissue[(ilium < 1) & body] = T["cancellous_bone"]
        tissue[(ilium < 1) & (ilium > 0.8) & body] = T["cortical_bone"]


def _upper_organs(b: _Subject) -> None:
    """Liver, stomach (wall, fluid, air-fluid level), spleen crescent and pancreas."""
    g, s, rng = b.g, b.s, b.rng
    c = np.array([72 * s, 8 * s, 88.0]) + b.jitter()
    r = np.array([98, 88, 78]) * b.scale()
    t = np.clip(0.35 + 0.65 * (g.x - (c[0] - r[0])) / (2 * r[0]), 0.3, 1.0)  # thin left lobe
    q = np.sqrt(((g.x - c[0]) / r[0]) ** 2 + ((g.y - c[1]) / (r[1] * t)) ** 2
                + ((g.z - c[2]) / (r[2] * np.sqrt(t))) ** 2)
    b.place("liver", q < 1 + _wobble(rng, g, 0.06))

    c = np.array([-52 * s, 42 * s, 78.0]) + b.jitter()
    rot = _rotation(rng, 25)
    q = ellipsoid(g, c, np.array([44, 32, 55]) * b.scale(0.15), rot) - _wobble(rng, g, 0.05)
    b.place("stomach", (q < 1) & (q > 0.86), "stomach_wall")
    lumen = q <= 0.86
    b.place("stomach", lumen, "stomach_fluid")
    b.tissue[lumen & b.cavity & (g.y > c[1] + rng.uniform(18, 28))] = T["gas"]  # air-fluid level

    c = np.array([-96 * s, -28 * s, 80.0]) + b.jitter()
    r = np.array([27, 55, 50]) * b.scale(0.15)
    rot = _rotation(rng, 15)
    crescent = ellipsoid(g, c + np.array([38, 8, 0]) * s, r * np.array([1.3, 0.85, 1.0]), rot)
    b.place("spleen", (ellipsoid(g, c, r, rot) < 1 + _wobble(rng, g, 0.05)) & (crescent > 1))

    head = np.array([28 * s, 10 * s, 14.0]) + b.jitter(5)
    path = np.stack([head, head + [-20 * s, 16 * s, 10], head + [-50 * s, 16 * s, 18],
                     head + [-86 * s, 0, 30], head + [-112 * s, -24 * s, 40]])
    radius = 10.0 * b.scale(0.12) + 2.5 * _wobble(rng, g, 1.0)
    pancreas = (polyline_distance(g, path) < radius) | (ellipsoid(g, head, (17, 15, 18)) < 1)
    b.place("pancreas", pancreas)


def _lower_organs(b: _Subject) -> None:
    """Kidneys (cortex, medulla, hilum), gallbladder, IVC and aorta, urinary bladder."""
    g, s, rng, spine_y = b.g, b.s, b.rng, b.spine_y
    for name, side, z0 in (("kidney_right", 1, -2.0), ("kidney_left", -1, 16.0)):
        c = np.array([side * 66 * s, spine_y + 8 * s, z0]) + b.jitter(7)
        rot = _rotation(rng, 10)
        r = np.array([26, 23, 52]) * b.scale()
        q = ellipsoid(g, c, r, rot) - _wobble(rng, g, 0.04)
        hilum = ellipsoid(g, c - np.array([side * 22, -4, 0]), (11, 10, 20))
        kidney = (q < 1) & (hilum > 1)
        b.place(name, kidney, "kidney_cortex")
        b.place(name, kidney & (q < 0.72), "kidney_medulla")

    c = np.array([52 * s, 44 * s, 30.0]) + b.jitter(5)
    q = ellipsoid(g, c, np.array([16, 16, 30]) * b.scale(0.2), _rotation(rng, 30))
    b.place("gallbladder", q < 1)

    # vessels: vertical tubes in front of the spine
    lean = rng.normal(0, 0.04, size=2)
    ivc = (((g.x - 24 * s - lean[0] * g.z) / 13) ** 2 + ((g.y - spine_y - 28 * s) / 9) ** 2 < 1)
    b.place("inferior_vena_cava", ivc & (g.z > -115) & (g.z < 125), "inferior_vena_cava")
    aorta_r = 11.0 * b.scale(0.08)
    aorta = ((g.x + 14 * s - lean[1] * g.z) ** 2 + (g.y - spine_y - 32 * s) ** 2) < aorta_r**2
    b.place("aorta", aorta & (g.z > -110), "aorta")

    c = np.array([0.0, 30 * s, -188.0]) + b.jitter(6)
    q = ellipsoid(g, c, np.array([46, 36, 34]) * b.scale(0.2)) - _wobble(rng, g, 0.04)
    b.place("urinary_bladder", q < 1)


def render_subject(rng: np.random.Generator, g: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Sample one subject and render it: returns (organ labels uint8, tissue indices uint8)."""
    subject = _Subject(rng, g)
    _body_wall(subject)
    _spine_and_pelvis(subject)
    _upper_organs(subject)
    _lower_organs(subject)
    return subject.label, subject.tissue
