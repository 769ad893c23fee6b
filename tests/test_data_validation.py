"""Bad input fails early, with every problem listed and each naming its file."""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medpeft.data.msd import DataError, check_dataset, load_msd


@pytest.fixture()
def liver_copy(collection, tmp_path):
    dst = tmp_path / "Task02_Liver"
    shutil.copytree(collection / "Task02_Liver", dst)
    return dst


def _cases(folder):
    return json.loads((folder / "dataset.json").read_text())["training"]


def test_valid_copy_passes(liver_copy):
    check_dataset(load_msd(liver_copy))


def test_missing_label_file_is_named(liver_copy):
    label = liver_copy / _cases(liver_copy)[0]["label"]
    label.unlink()
    with pytest.raises(DataError, match=label.name) as err:
        check_dataset(load_msd(liver_copy))
    assert "missing" in str(err.value)


def test_shape_and_affine_mismatch_and_bad_values_all_reported(liver_copy):
    first, second = (liver_copy / c["label"] for c in _cases(liver_copy)[:2])
    img = nib.load(first)
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), img.affine), first)
    img2 = nib.load(second)
    data = np.asarray(img2.dataobj).copy()
    data[0, 0, 0] = 7  # not in dataset.json labels
    shifted = img2.affine.copy()
    shifted[0, 3] += 10.0
    nib.save(nib.Nifti1Image(data, shifted), second)
    with pytest.raises(DataError) as err:
        check_dataset(load_msd(liver_copy))
    problems = err.value.problems
    assert any(first.name in p and "shape" in p for p in problems)
    assert any(second.name in p and "affine" in p for p in problems)
    assert any(second.name in p and "[7]" in p for p in problems)


def test_non_nifti_files_are_named(liver_copy):
    entries = _cases(liver_copy)
    corrupt = liver_copy / entries[0]["image"]
    corrupt.write_bytes(b"this is not a NIfTI volume")
    txt = liver_copy / "imagesTr" / "notes.txt"
    txt.write_text("hello")
    meta = json.loads((liver_copy / "dataset.json").read_text())
    meta["training"][1]["image"] = "./imagesTr/notes.txt"
    (liver_copy / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError) as err:
        check_dataset(load_msd(liver_copy))
    text = str(err.value)
    assert corrupt.name in text and "notes.txt" in text and "not a NIfTI" in text


def test_missing_dataset_json(tmp_path):
    with pytest.raises(DataError, match="dataset.json"):
        load_msd(tmp_path)


@pytest.mark.parametrize(("offset", "scale", "likely"), [
    (1024, 1, "stored values without the rescale intercept"), (1000, 1 / 3000, "normalised")])
def test_an_image_not_in_hounsfield_units_is_named(liver_copy, offset, scale, likely):
    """Raw stored values or a normalised image would be windowed as HU and segmented as noise."""
    image_path = liver_copy / _cases(liver_copy)[1]["image"]
    img = nib.load(image_path)
    values = ((np.asarray(img.dataobj, dtype=np.float32) + offset) * scale).astype(np.float32)
    nib.save(nib.Nifti1Image(values, img.affine), image_path)
    with pytest.raises(DataError, match=image_path.name) as err:
        check_dataset(load_msd(liver_copy))
    assert "not a CT in Hounsfield units" in str(err.value) and likely in str(err.value)
    assert len(err.value.problems) == 1  # the other cases, in HU, pass


def test_an_image_with_nan_voxels_is_named(liver_copy):
    image_path = liver_copy / _cases(liver_copy)[0]["image"]
    img = nib.load(image_path)
    values = np.asarray(img.dataobj, dtype=np.float32)
    values[0, :3, 0] = np.nan  # what some converters write outside the field of view
    nib.save(nib.Nifti1Image(values, img.affine), image_path)
    with pytest.raises(DataError, match=image_path.name) as err:
        check_dataset(load_msd(liver_copy))
    assert "3 voxel(s) are NaN or infinite" in str(err.value)


@pytest.mark.parametrize(("keep", "message"), [
    (lambda v: v[:, :, 5], "a 2D image"),
    (lambda v: v[:, :, 5:6], "a single voxel along axis 2: a slice, not a volume"),
    (lambda v: np.stack([v, v], axis=-1), "2 volumes in one file")])
def test_an_image_that_is_not_one_3d_volume_is_named(liver_copy, keep, message):
    """A slice, a 2D image or a 4D series is refused by name instead of failing inside MONAI or
    being segmented as if it were a volume; the other cases pass."""
    case = _cases(liver_copy)[1]
    image_path, label_path = liver_copy / case["image"], liver_copy / case["label"]
    for path in (image_path, label_path):
        img = nib.load(path)
        nib.save(nib.Nifti1Image(keep(np.asarray(img.dataobj)), img.affine), path)
    with pytest.raises(DataError, match=image_path.name) as err:
        check_dataset(load_msd(liver_copy))
    assert message in str(err.value) and len(err.value.problems) == 1


def test_a_volume_with_a_trailing_singleton_axis_is_one_volume(liver_copy):
    """(X, Y, Z, 1), as some converters write a 3D volume, passes."""
    image_path = liver_copy / _cases(liver_copy)[0]["image"]
    img = nib.load(image_path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., None], img.affine), image_path)
    check_dataset(load_msd(liver_copy))
