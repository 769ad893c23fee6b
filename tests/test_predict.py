"""medpeft predict: label maps in each input's own geometry, whatever its orientation and spacing."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from typer.testing import CliRunner

from medpeft.cli import app
from medpeft.data.msd import load_msd
from medpeft.data.ontology import ORGAN_ID
from medpeft.models.weights import shipped_foundation


def test_predict_keeps_each_inputs_geometry_and_survives_a_bad_file(collection, tmp_path):
    image = nib.load(str(load_msd(collection / "Task10_NewSite").cases[0].image))
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(image, str(inputs / "a_original.nii.gz"))  # LPS on disk, 3.6 x 3.6 x 5 mm
    ornt = ornt_transform(io_orientation(image.affine), axcodes2ornt(("S", "A", "R")))
    turned = image.as_reoriented(ornt)  # same voxels, axes permuted and flipped
    nib.save(turned, str(inputs / "b_turned.nii.gz"))
    zoomed = nib.Nifti1Image(np.asarray(image.dataobj), image.affine @ np.diag([0.8, 1.3, 0.6, 1]))
    nib.save(zoomed, str(inputs / "c_zoomed.nii.gz"))  # neither RAS nor the working spacing
    (inputs / "d_broken.nii.gz").write_bytes(b"not a nifti file")
    nib.save(image, str(tmp_path / "whole.nii"))  # a header that reads, then half the voxels
    (inputs / "e_cut.nii").write_bytes((tmp_path / "whole.nii").read_bytes()[:-20000])
    stored = (np.asarray(image.dataobj) + 1024).astype(np.int16)  # no rescale intercept: air at 24
    nib.save(nib.Nifti1Image(stored, image.affine), str(inputs / "f_stored_values.nii.gz"))
    one_slice = np.asarray(image.dataobj)[:, :, 10:11]  # a slice: not segmented as a volume
    nib.save(nib.Nifti1Image(one_slice, image.affine), str(inputs / "g_slice.nii.gz"))

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", "--base", str(shipped_foundation()),
                                      "--in", str(inputs), "--out", str(out)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output  # one input failed ...
    assert "4 input(s) failed" in result.output
    # each named with the reader's own reason, in one line (not MONAI's wrapper or tracebacks)
    assert "d_broken.nii.gz: ImageFileError: File " in result.output
    assert "e_cut.nii: OSError: Expected " in result.output
    assert "f_stored_values.nii.gz: ValueError: " in result.output  # not segmented as noise
    assert "not a CT in Hounsfield units; likely the scanner's stored values" in result.output
    assert "g_slice.nii.gz: ValueError: " in result.output and "a slice, not a volume" in result.output
    assert "Traceback" not in result.output and "object at 0x" not in result.output
    for name, source in (("a_original", image), ("b_turned", turned), ("c_zoomed", zoomed)):
        pred = nib.load(str(out / f"{name}.nii.gz"))  # ... and every other one was written
        assert pred.shape == source.shape and np.allclose(pred.affine, source.affine, atol=1e-4)
        values = set(np.unique(np.asarray(pred.dataobj)).tolist())
        assert values <= {0, *ORGAN_ID.values()} and len(values) > 1
    labels = json.loads((out / "labels.json").read_text())
    assert labels[str(ORGAN_ID["liver"])] == "liver"
    a = np.asarray(nib.load(str(out / "a_original.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(out / "b_turned.nii.gz")).dataobj)
    back = nib.orientations.apply_orientation(b, ornt_transform(axcodes2ornt(("S", "A", "R")),
                                                                io_orientation(image.affine)))
    assert (back == a).mean() > 0.99  # the same anatomy gets the same labels, voxel for voxel
