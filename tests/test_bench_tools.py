"""Pieces of the benches that decide what their figures mean: the GPU check's repacked wheels must
stay the same wheels, and mark_scale's pattern must sit on the face box alone."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_repacked_wheels_hold_the_same_files_in_lzma(tmp_path):
    import gpu_check

    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    files = {"demo/__init__.py": b"VALUE = 1\n" * 100, "demo-1.0.dist-info/RECORD": b"demo/__init__.py,,\n"}
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    total = gpu_check.repack_wheels(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        assert {i.filename: z.read(i.filename) for i in z.infolist()} == files
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_LZMA}
    assert total == wheel.stat().st_size
    assert gpu_check.repack_wheels(tmp_path) == total  # already repacked: left as it is


def test_mark_scale_pattern_is_keyed_cells_on_the_face_box_only():
    import mark_scale

    box = (10, 20, 74, 52)
    p = mark_scale.pattern((80, 100), box, cell=16)
    assert set(np.unique(p[20:52, 10:74])) == {-1.0, 1.0}
    outside = p.copy()
    outside[20:52, 10:74] = 0
    assert not outside.any()
    assert (p[20:36, 10:26] == p[20, 10]).all()  # one cell, one sign
    assert np.array_equal(p, mark_scale.pattern((80, 100), box, cell=16))  # keyed: the same every time


def test_swap_settings_parses_labels_into_typed_fields_and_refuses_unknown_ones():
    import pytest
    import swap_settings

    assert swap_settings.parse_setting("base=") == ("base", {})
    assert swap_settings.parse_setting("s=smooth:0.8,blend:alpha,erode:-8") == (
        "s", {"smooth": 0.8, "blend": "alpha", "erode": -8})
    with pytest.raises(SystemExit, match="neither smooth nor a SwapSettings field"):
        swap_settings.parse_setting("x=colour:lab")
