"""DICOM maps pass the dicom3tools validator ``dciodvfy`` without a single error.

The series cover T1, T2, PD and standard-deviation maps, seconds and milliseconds, several
slices, a flat map and an all-zero map (the WindowWidth and RescaleSlope edge cases), with and
without acquisition metadata. ``make test`` installs dicom3tools with apt-get when it can;
without it these tests skip and say so.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from mrf_monai.io.dicom import write_dicom_maps
from mrf_monai.physics import fisp_mrf_jiang2015
from mrf_monai.physics.sequence import MRFSequence

DCIODVFY = shutil.which("dciodvfy")
pytestmark = pytest.mark.skipif(
    DCIODVFY is None,
    reason="dciodvfy (Debian package dicom3tools) is not installed: `apt-get install dicom3tools`; "
    "`make test` installs it when it runs as root or with passwordless sudo",
)

#: Warnings the writer used to produce and must not produce again. The remaining ones are
#: deliberate: RescaleSlope/RescaleIntercept in MR Image Storage ("Standard Extended SOP Class").
FIXED_WARNINGS = (
    "Retired Person Name form",
    "Unrecognized defined term",
    "Study ID",
    "Laterality",
    "Rescale Type",
    "WindowWidth",
)


def _affine(spacing_mm: float = 24.0):
    aff = np.diag([-1.8, -1.8, spacing_mm, 1.0])
    aff[:3, 3] = [57.6, 57.6, -spacing_mm]
    return aff


def _maps(rng, n: int = 16, slices: int = 3) -> dict[str, np.ndarray]:
    obj = np.zeros((n, n, slices))
    obj[3:-3, 4:-4] = 1.0
    return {
        "T1map": obj * rng.uniform(0.3, 3.0, obj.shape),
        "T2map": obj * rng.uniform(0.01, 0.3, obj.shape),
        "PDmap": obj * rng.uniform(0.001, 0.01, obj.shape),  # a window far below 1
        "desc-std_T1map": obj * 0.01,  # flat
        "desc-std_T2map": np.zeros(obj.shape),  # all zero
    }


def _variable_tr_sequence() -> MRFSequence:
    base = fisp_mrf_jiang2015(40)
    return MRFSequence("FISP", base.flip_angle_deg, np.linspace(11.0, 15.0, 40), 2.0, None, name="var-TR")


CASES = {
    "ms-metadata": dict(
        units="ms",
        sequence=fisp_mrf_jiang2015(40),
        patient_position="HFS",
        slice_thickness_mm=5.0,
        imaging_frequency_hz=123.2e6,
    ),
    "s-variable-TR-FFS": dict(
        units="s", sequence=_variable_tr_sequence(), patient_position="FFS", slice_thickness_mm=5.0
    ),
    "ms-no-metadata": dict(units="ms"),
    "s-no-metadata-unknown-body-part": dict(units="s", body_part=None),
}


def _validate(path) -> list[str]:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).splitlines()


@pytest.mark.parametrize("case", sorted(CASES))
def test_dciodvfy_reports_no_error(tmp_path, case):
    rng = np.random.default_rng(len(case))
    out = write_dicom_maps(tmp_path, "01", _maps(rng), _affine(), method="svdmrf", **CASES[case])
    paths = [p for series in out.values() for p in series.paths]
    assert len(paths) == 5 * 3
    errors, fixed = [], []
    for path in paths:
        for line in _validate(path):
            where = f"{path.parent.name}/{path.name}: {line}"
            if line.startswith("Error"):
                errors.append(where)
            elif line.startswith("Warning") and any(w in line for w in FIXED_WARNINGS):
                if not (case.endswith("unknown-body-part") and "Laterality" in line):
                    fixed.append(where)
    assert not errors, "dciodvfy errors:\n" + "\n".join(errors)
    assert not fixed, "warnings that the writer fixed are back:\n" + "\n".join(fixed)


def test_dciodvfy_sees_a_broken_file(tmp_path):
    """The validator run is real: removing a required attribute is reported as an error."""
    import pydicom

    out = write_dicom_maps(tmp_path, "01", {"T1map": np.ones((4, 4, 1))}, _affine(4.0))
    path = out["T1map"].paths[0]
    ds = pydicom.dcmread(path)
    del ds.PatientPosition
    del ds.EchoTime
    ds.save_as(path)
    errors = [line for line in _validate(path) if line.startswith("Error")]
    assert any("PatientPosition" in e for e in errors) and any("EchoTime" in e for e in errors)
