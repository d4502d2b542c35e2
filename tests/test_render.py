import io
import subprocess
import sys

import numpy as np
import pytest
from factories import disc, with_center
from PIL import Image

from wafersage.errors import WaferSageError
from wafersage.wafers.encoding import FAIL, OFF, PASS
from wafersage.wafers.render import (
    DEFAULT_SIZE,
    MAP_KEY,
    PALETTE,
    embedded_map,
    map_from_text,
    map_text,
    png_bytes,
    render_map,
    resample,
)


def test_render_is_deterministic_and_uses_the_palette():
    m = with_center(30)
    a, b = render_map(m, 64), render_map(m, 64)
    assert a.size == (64, 64) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    colors = {tuple(c) for c in np.asarray(a).reshape(-1, 3)}
    assert colors == {PALETTE[OFF], PALETTE[PASS], PALETTE[FAIL]}


def test_one_die_scratch_survives_downscaling():
    m = disc(200)
    m[100, 40:160] = FAIL  # a one-die-wide line on a 200-die grid, rendered at 96 px
    r = resample(m, 96)
    assert r.shape == (96, 96)
    rows = np.flatnonzero((r == FAIL).any(axis=1))
    assert len(rows) == 1  # still one continuous line
    assert (r[rows[0]] == FAIL).sum() >= 55


def test_small_map_is_upscaled_centred_with_aspect_kept():
    m = np.full((20, 30), PASS, dtype=np.uint8)
    m[0, 0] = FAIL
    r = resample(m, 96)
    assert (r[16:20, 0:4] == FAIL).all() and (r == FAIL).sum() == 16  # 3.2 px a die: the first takes 4
    assert (r[:16] == OFF).all() and (r[-16:] == OFF).all()  # 64-px-high map, padded top and bottom


def test_a_rendered_image_carries_its_die_level_map_through_png():
    m = with_center(45)
    m[3, 10] = FAIL  # a lone fail the 64 px picture merges with its neighbours
    image = render_map(m, 64)
    assert image.info[MAP_KEY] == map_text(m) and map_text(m).startswith("45x45:")
    reread = Image.open(io.BytesIO(png_bytes(m, 64)))
    np.testing.assert_array_equal(embedded_map(reread), m)
    np.testing.assert_array_equal(embedded_map(reread.convert("RGB").resize((32, 32))), m)
    assert embedded_map(Image.new("RGB", (64, 64))) is None
    assert png_bytes(m, 64) == png_bytes(m, 64)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("45x45:" + "0" * 2024, "wrong size"),
        ("3x3:" + "0" * 9, "wrong size"),
        ("4x4:" + "0123" * 4, "not a map"),
        ("4x4" + "0" * 16, "not a map"),
        ("-4x4:" + "0" * 16, "not a map"),
    ],
)
def test_a_bad_map_text_is_a_one_line_error(text, rule):
    with pytest.raises(WaferSageError, match=rule):
        map_from_text(text, "x.png")


@pytest.mark.parametrize("size", [0, 50, -32])
def test_size_must_be_multiple_of_32(size):
    with pytest.raises(WaferSageError, match="multiple of 32"):
        render_map(disc(10), size)


def _cli(*args, cwd=None):
    code = "from wafersage.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd)


def test_cli_renders_a_file_and_a_folder(tmp_path):
    np.save(tmp_path / "a.npy", with_center(40))
    np.save(tmp_path / "b.npy", disc(25))
    r = _cli("render", str(tmp_path / "a.npy"), str(tmp_path / "a.png"), "--size", "64")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "a.png").size == (64, 64)
    np.testing.assert_array_equal(embedded_map(Image.open(tmp_path / "a.png")), with_center(40))
    (tmp_path / "maps").mkdir()
    for f in ("a.npy", "b.npy"):
        (tmp_path / "maps" / f).write_bytes((tmp_path / f).read_bytes())
    r = _cli("render", str(tmp_path / "maps"), str(tmp_path / "pngs"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["a.png", "b.png"]
    assert Image.open(tmp_path / "pngs" / "a.png").size == (DEFAULT_SIZE, DEFAULT_SIZE)  # no params.yaml
    (tmp_path / "params.yaml").write_text("render:\n  size: 96\n")  # the pipeline's size is the default
    r = _cli("render", str(tmp_path / "a.npy"), str(tmp_path / "c.png"), cwd=tmp_path)
    assert r.returncode == 0 and Image.open(tmp_path / "c.png").size == (96, 96), r.stderr


def test_cli_bad_map_is_one_line_error_and_no_output(tmp_path):
    (tmp_path / "maps").mkdir()
    np.save(tmp_path / "maps" / "good.npy", disc(20))
    bad = disc(20)
    bad[3, 3] = 7
    np.save(tmp_path / "maps" / "bad.npy", bad)
    r = _cli("render", str(tmp_path / "maps"), str(tmp_path / "pngs"))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "bad.npy" in r.stderr and "outside encoding" in r.stderr
    assert not (tmp_path / "pngs").exists()


def test_cli_refuses_pickled_npy(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = _cli("render", str(tmp_path / "obj.npy"), str(tmp_path / "o.png"))
    assert r.returncode == 2 and "not a readable .npy" in r.stderr
    assert not (tmp_path / "o.png").exists()
