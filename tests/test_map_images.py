"""One meaning for a map image everywhere: a map sent as ``.npy``, as a die-level grayscale PNG
(0/1/2 or 0/128/255, as ``ingest --source png-folder`` reads it) or as the picture ``wafersage
render`` draws (which carries its die-level map) reaches the model as the same pixels and the same
die-level map, and gets the same answer from ``serve``, ``ask``, the MLflow pyfunc and the
evaluation's real-val path."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tiny_model import SIZE, build_tiny_model

from wafersage.annotation.grounding import IMAGE_ATTRIBUTES, attributes_text, image_text, image_to_map
from wafersage.annotation.vqa import Q_TYPE
from wafersage.errors import WaferSageError
from wafersage.evaluation import real_val
from wafersage.serving import images
from wafersage.serving.app import ServeLimits, create_app
from wafersage.serving.ask import ask
from wafersage.serving.images import model_image, png_data_url
from wafersage.serving.predictor import Predictor
from wafersage.serving.pyfunc import WaferVLM
from wafersage.wafers import render
from wafersage.wafers.loaders import load
from wafersage.wafers.rawtable import decode_map, new_table
from wafersage.wafers.render import MAP_KEY, map_text, render_map, save_png
from wafersage.wafers.synthetic import SyntheticConfig, generate

QUESTION = "What type of defect pattern is visible on this wafer map?"
#: Die values as the processed pickles (and 0/128/255 PNGs) write them.
PROCESSED = np.array([0, 128, 255], dtype=np.uint8)


def center_map() -> np.ndarray:
    """A 30 x 38 wafer (not square, not the model's size) with a blob of fails at its centre."""
    yy, xx = np.mgrid[:30, :38]
    m = np.where(((yy - 14.5) / 15) ** 2 + ((xx - 18.5) / 19) ** 2 <= 1, 1, 0).astype(np.uint8)
    m[12:18, 15:22] = 2
    return m


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def rendered_png(m: np.ndarray, size: int = SIZE) -> bytes:
    """The PNG ``wafersage render`` writes: the picture and its die-level map."""
    return render.png_bytes(m, size)


def npy_bytes(m: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, m)
    return buf.getvalue()


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


#: A grayscale PNG whose values are neither 0/1/2 nor 0/128/255.
GRAY_ODD = png_bytes(Image.fromarray(np.array([[0, 5], [9, 1]] * 4, dtype=np.uint8)))


def forms(m: np.ndarray) -> dict[str, bytes]:
    """The same map as .npy bytes, die-level PNGs (0/1/2, 0/128/255) and the rendered PNG."""
    return {
        "npy": npy_bytes(m),
        "png-012": png_bytes(Image.fromarray(m)),
        "png-0-128-255": png_bytes(Image.fromarray(PROCESSED[m])),
        "rendered": rendered_png(m),
    }


def pixels(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


class Recorder:
    """A predictor that keeps the pixels of every image it is asked about, then answers with
    ``inner``."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.images, self.maps = inner, [], []
        self.image_size, self.folder = inner.image_size, inner.folder
        self.max_new_tokens, self.batch_size = inner.max_new_tokens, inner.batch_size

    def answer(self, images: list[Any], questions: list[str], max_new_tokens: int | None = None) -> list[str]:
        self.images.extend(pixels(im) for im in images)
        self.maps.extend(im.info.get(MAP_KEY) for im in images)
        return self.inner.answer(images, questions, max_new_tokens)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model that reads the grounding facts off its input image; with this seed its greedy
    answers differ between a map's rendering and the old resize of its die-level PNG."""
    folder = build_tiny_model(tmp_path_factory.mktemp("map_images") / "base", seed=7)
    info = json.loads((folder / "wafersage.json").read_text())
    (folder / "wafersage.json").write_text(json.dumps({**info, "grounding": IMAGE_ATTRIBUTES}))
    return folder


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor(model_dir, max_new_tokens=6)


# --- the decoding itself ---------------------------------------------------------------------


def _gray_palette(m: np.ndarray) -> Image.Image:
    return Image.fromarray(m).convert("P")  # palette entries (0,0,0), (1,1,1), (2,2,2)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda m: m, id="array"),
        pytest.param(lambda m: m.tolist(), id="nested-list"),
        pytest.param(lambda m: json.dumps(m.tolist()), id="json-text"),
        pytest.param(npy_bytes, id="npy-bytes"),
        pytest.param(lambda m: data_url("application/x-npy", npy_bytes(m)), id="npy-data-url"),
        pytest.param(lambda m: Image.fromarray(m), id="pil-L-012"),
        pytest.param(lambda m: png_bytes(Image.fromarray(m)), id="png-L-012"),
        pytest.param(lambda m: png_bytes(Image.fromarray(PROCESSED[m])), id="png-L-0-128-255"),
        pytest.param(lambda m: png_bytes(Image.fromarray(m.astype(np.uint16))), id="png-I16-012"),
        pytest.param(lambda m: png_bytes(_gray_palette(m)), id="png-P-gray-012"),
        pytest.param(lambda m: png_bytes(Image.fromarray(PROCESSED[m]).convert("RGB")), id="png-RGB-gray"),
        pytest.param(lambda m: base64.b64encode(png_bytes(Image.fromarray(m))).decode(), id="base64-png-012"),
        pytest.param(rendered_png, id="rendered"),
        pytest.param(lambda m: png_bytes(render_map(m, SIZE)), id="rendered-picture-alone"),
        pytest.param(lambda m: rendered_png(m, 2 * SIZE), id="rendered-larger"),
        pytest.param(lambda m: render_map(m, SIZE).quantize(colors=3), id="rendered-P-indices-012"),
        pytest.param(lambda m: png_data_url(render_map(m, SIZE)), id="rendered-data-url"),
    ],
)
def test_every_form_of_a_map_is_the_model_image_of_that_map(make):
    m = center_map()
    got = model_image(make(m), SIZE)
    assert got.mode == "RGB" and got.size == (SIZE, SIZE)
    np.testing.assert_array_equal(pixels(got), pixels(render_map(m, SIZE)))


def test_a_map_file_is_read_like_ingest_reads_it(tmp_path):
    m = center_map()
    (tmp_path / "a.png").write_bytes(png_bytes(Image.fromarray(PROCESSED[m])))
    (tmp_path / "labels.csv").write_text("file,labels\na.png,Center\n")
    ingested = load("png-folder", tmp_path)
    np.testing.assert_array_equal(decode_map(*ingested.loc[0, ["map", "rows", "cols"]]), m)
    np.save(tmp_path / "a.npy", m)
    want = pixels(render_map(m, SIZE))
    np.testing.assert_array_equal(pixels(model_image(tmp_path / "a.png", SIZE)), want)
    np.testing.assert_array_equal(pixels(model_image(tmp_path / "a.npy", SIZE)), want)


def _npy_declaring(shape: str) -> bytes:
    """``.npy`` bytes whose header declares ``shape`` (as text) over 64 bytes of data."""
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}".ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(64)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        pytest.param(GRAY_ODD, "match no map encoding", id="gray-odd-values"),
        pytest.param(png_bytes(Image.new("L", (8, 8))), "map is empty", id="gray-all-off"),
        pytest.param(png_bytes(Image.new("L", (2, 2), 1)), "map dimensions out of range", id="gray-2x2"),
        pytest.param(npy_bytes(np.full((8, 8), 7, dtype=np.uint8)), "map value outside encoding", id="npy-7"),
        pytest.param(b"\x89PNG\r\n\x1a\nnot really", "not a readable image", id="not-a-png"),
        pytest.param(_npy_declaring("(10000000, 10000000)"), "array too large", id="npy-10e7-square"),
        pytest.param(_npy_declaring("(8, 8"), "not a readable .npy array", id="npy-header-unclosed-tuple"),
    ],
)
def test_bad_maps_are_one_line_errors(value, rule):
    with pytest.raises(WaferSageError) as exc:
        model_image(value, SIZE, "image row 0")
    assert rule in str(exc.value) and "\n" not in str(exc.value)
    assert str(exc.value).startswith("image row 0")


# --- serve, ask and the pyfunc ---------------------------------------------------------------


def _chat(client: TestClient, url: str) -> Any:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]
    return client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 6},
    )


def test_serve_gives_every_form_of_a_map_the_same_input_and_answer(predictor):
    m = center_map()
    rec = Recorder(predictor)
    mimes = {"npy": "application/x-npy"}
    with TestClient(create_app(rec, ServeLimits(max_tokens=6))) as client:
        answers = {}
        for name, data in forms(m).items():
            r = _chat(client, data_url(mimes.get(name, "image/png"), data))
            assert r.status_code == 200, r.text
            answers[name] = r.json()["choices"][0]["message"]["content"]
    want = pixels(render_map(m, SIZE))
    assert len(rec.images) == 4
    for name, got in zip(forms(m), rec.images, strict=True):
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert rec.maps == [map_text(m)] * 4  # every form reaches the grounding with its die-level map
    expected = predictor.answer([render_map(m, SIZE)], [QUESTION], 6)[0]
    assert answers == dict.fromkeys(forms(m), expected)
    resized = Image.fromarray(m).convert("RGB").resize((SIZE, SIZE), Image.Resampling.NEAREST)
    assert predictor.answer([resized], [QUESTION], 6)[0] != expected  # the answers tell inputs apart


def forged_png(m: np.ndarray, text: str) -> bytes:
    """The picture of ``m`` carrying ``text`` as its die-level map."""
    image = render_map(m, SIZE)
    image.info[MAP_KEY] = text
    buf = io.BytesIO()
    save_png(image, buf)
    return buf.getvalue()


def test_a_picture_without_its_map_is_grounded_from_its_pixels_and_a_false_map_is_refused(predictor, caplog):
    m = center_map()
    images._warn_bare_picture.cache_clear()
    with caplog.at_level(logging.WARNING, logger="wafersage.serving"):
        carried = model_image(rendered_png(m), SIZE)
        assert caplog.records == []
        alone = model_image(png_bytes(render_map(m, SIZE)), SIZE)
        model_image(png_bytes(render_map(m, SIZE)), SIZE)
    said = [r.getMessage() for r in caplog.records if r.name == "wafersage.serving"]
    assert len(said) == 1 and "without its die-level map" in said[0]  # said once
    np.testing.assert_array_equal(pixels(carried), pixels(alone))
    assert carried.info[MAP_KEY] == map_text(m) and MAP_KEY not in alone.info
    assert image_text(carried) == attributes_text(m)
    assert image_text(alone) == attributes_text(image_to_map(render_map(m, SIZE)))
    assert image_text(alone) != image_text(carried)  # the 64 px picture blurs this map's shape
    other = m.copy()
    other[:, :3] = 2
    cases = {
        map_text(other): "map does not match its pixels",
        "30x38:012": "text has the wrong size",
        "a map": "text is not a map",
    }
    with TestClient(create_app(predictor, ServeLimits(max_tokens=6))) as client:
        for text, rule in cases.items():
            with pytest.raises(WaferSageError, match=rule):
                model_image(forged_png(m, text), SIZE)
            r = _chat(client, data_url("image/png", forged_png(m, text)))
            assert r.status_code == 400 and rule in r.json()["error"]["message"]


def test_serve_refuses_a_gray_image_that_is_no_map_with_a_400(predictor):
    with TestClient(create_app(predictor, ServeLimits(max_tokens=6))) as client:
        r = _chat(client, data_url("image/png", GRAY_ODD))
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_image"
    assert error["message"] == (
        "image_url: grayscale image values match no map encoding (values [0, 1, 5, 9]; expected a "
        "subset of {0,1,2} or {0,128,255} (a rendered map is RGB))"
    )


def test_ask_gives_every_form_of_a_map_the_same_input_and_answer(tmp_path, predictor):
    m = center_map()
    for name, data in forms(m).items():
        (tmp_path / f"{name}.{'npy' if name == 'npy' else 'png'}").write_bytes(data)
    rec = Recorder(predictor)
    records = ask(tmp_path, QUESTION, rec)
    assert [r["file"] for r in records] == ["npy.npy", "png-0-128-255.png", "png-012.png", "rendered.png"]
    want = pixels(render_map(m, SIZE))
    for r, got in zip(records, rec.images, strict=True):
        np.testing.assert_array_equal(got, want, err_msg=r["file"])
    expected = predictor.answer([render_map(m, SIZE)], [QUESTION])[0]
    assert [r["answer"] for r in records] == [expected] * 4


def test_pyfunc_gives_every_form_of_a_map_the_same_input_and_answer(model_dir, predictor):
    m = center_map()
    model = WaferVLM()
    model.load_context(
        SimpleNamespace(artifacts={"model": str(model_dir)}, model_config={"max_new_tokens": 6})
    )
    rec = Recorder(model.predictor)
    model.predictor = rec
    f = forms(m)
    cells = [
        base64.b64encode(f["npy"]).decode(),
        base64.b64encode(f["png-012"]).decode(),
        data_url("image/png", f["png-0-128-255"]),
        base64.b64encode(f["rendered"]).decode(),
        json.dumps(m.tolist()),
    ]
    out = model.predict(None, pd.DataFrame({"image": cells, "question": [QUESTION] * 5}))
    want = pixels(render_map(m, SIZE))
    for got in rec.images:
        np.testing.assert_array_equal(got, want)
    expected = predictor.answer([render_map(m, SIZE)], [QUESTION])[0]
    assert out["answer"].tolist() == [expected] * 5
    with pytest.raises(WaferSageError, match="^image row 0: map is empty"):
        model.predict(
            None, pd.DataFrame({"image": [png_data_url(Image.new("L", (8, 8)))], "question": ["?"]})
        )


def test_ask_on_a_folder_answers_like_the_real_val_path(tmp_path, predictor):
    syn = generate(SyntheticConfig(n_wafers=4, seed=5))
    table = new_table({k: list(syn[k]) for k in ("wafer_id", "source", "rows", "cols", "map", "labels")})
    folder = tmp_path / "maps"
    folder.mkdir()
    for i, (b, r, c) in enumerate(zip(table["map"], table["rows"], table["cols"], strict=True)):
        m = decode_map(b, r, c)
        pic = Image.fromarray(m if i % 2 else PROCESSED[m])  # both die-level encodings
        pic.save(folder / f"m{i}.png")
    val, via_ask = Recorder(predictor), Recorder(predictor)
    answers, question = real_val.answers(val, table)
    assert question == Q_TYPE[real_val.QUESTION_INDEX]
    records = ask(folder, question, via_ask)
    assert [r["file"] for r in records] == [f"m{i}.png" for i in range(4)]
    assert len(val.images) == len(via_ask.images) == 4
    for a, b in zip(val.images, via_ask.images, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [r["answer"] for r in records] == answers


def test_a_png_with_a_broken_chunk_is_a_one_line_error():
    """PIL reports some damaged chunks as SyntaxError: that must be the image's one-line error (a
    400 in serve), not an exception escaping to a 500. Two bytes of this PNG, found by seeded
    mutation, damage the IDAT data and the IEND chunk's type."""
    from wafersage.errors import WaferSageError
    from wafersage.serving.images import decode_bytes
    from wafersage.wafers.render import render_map

    buf = io.BytesIO()
    render_map(np.ones((20, 20), dtype=np.uint8), 64).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert len(data) == 156 and data[148:152] == b"IEND"
    data[131], data[149] = 90, 19
    with pytest.raises(WaferSageError, match="image data is truncated or corrupt \\(SyntaxError\\)"):
        decode_bytes(bytes(data), "image_url", 64)
