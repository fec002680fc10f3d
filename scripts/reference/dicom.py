"""DICOM fixtures and their expected renderings for huatuo (tests/dicom.rs, issue 16).

Writes into tests/fixtures/dicom/:

- small synthetic DICOM files (16x16 to 40x32 pixels, a few KB each), one per case of the
  issue's acceptance list: every transfer syntax huatuo reads (implicit/explicit VR little
  endian, explicit big endian, deflate, RLE, JPEG baseline/extended/lossless, JPEG-LS
  lossless/near-lossless, JPEG 2000 lossless/lossy), signed and unsigned data, MONOCHROME1,
  rescale, the file's window (LINEAR, LINEAR_EXACT, SIGMOID), presets, explicit windows,
  min-max, multi-frame, RGB (both planar configurations), YBR_FULL, YBR_FULL_422, palette
  colour;
- files for the error paths (no pixel data, an unsupported syntax, an absurd size, an element
  longer than the file, a file without the 128-byte preamble, a data set without a meta
  header) and one carrying made-up identifying values (identifying.json lists them);
- expected/<case>.png: the 8-bit RGB rendering each case must produce, computed here with
  numpy from the formulas of issue 16 (the `render` function below), and cases.json, which
  ties files, frames, windows, expected images and tolerances together.

The expected image of a lossless case is computed from the array that was encoded (and the
script checks that pydicom decodes the file back to that array). A lossy case's expected image
is computed from the values a reference decoder returns: libjpeg-turbo 3 (imagecodecs) for
JPEG baseline/extended, OpenJPEG (pylibjpeg-openjpeg, through pydicom) for JPEG 2000, CharLS
(pyjpegls, through pydicom) for JPEG-LS near-lossless. Tolerances: 0 grey levels for lossless
data and for JPEG-LS near-lossless (its decoding is exact arithmetic), 3 for lossy JPEG and
JPEG 2000, whose decoders may round the inverse transform differently.

Every encoder here is deterministic and every UID fixed, so running the script twice gives
identical files. Run from the project root:

    python3 -m venv /tmp/dicom-venv
    /tmp/dicom-venv/bin/pip install pydicom==3.0.2 numpy pillow imagecodecs \
        pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls
    /tmp/dicom-venv/bin/python scripts/reference/dicom.py

(checked with pydicom 3.0.2, numpy 2.4, imagecodecs 2026.3.6 / libjpeg-turbo 3.1.3,
pylibjpeg-openjpeg 2.6.0, pyjpegls 1.5.1). CI never runs it: the files it writes are committed.
"""

from __future__ import annotations

import json
import os
import struct
import sys

import imagecodecs
import numpy as np
import pydicom
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.processing import convert_color_space

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "dicom")
EXPECTED = os.path.join(OUT, "expected")

# pydicom's UID root (1.2.826.0.1.3680043.8.498) + the issue number: fixed, never random.
UID_ROOT = "1.2.826.0.1.3680043.8.498.16."

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"

# Issue 16's presets (centre, width).
PRESETS = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
}

# ---------------------------------------------------------------------------------------------
# The rendering, as issue 16 words it
# ---------------------------------------------------------------------------------------------


def parse_window(text: str) -> tuple[float, float]:
    """`C,W` or a preset name; a window given on the command line is LINEAR."""
    if text in PRESETS:
        return PRESETS[text]
    c, w = text.split(",")
    return float(c), float(w)


def voi(v: np.ndarray, c: float, w: float, function: str) -> np.ndarray:
    """Step (3): y in [0, 1] (DICOM PS3.3 C.11.2.1.2), float64 throughout."""
    if function == "LINEAR":
        c2, w2 = c - 0.5, w - 1.0
        y = np.empty_like(v)
        low = v <= c2 - w2 / 2.0
        high = v > c2 + w2 / 2.0
        mid = ~(low | high)
        y[low] = 0.0
        y[high] = 1.0
        y[mid] = (v[mid] - c2) / w2 + 0.5
        return y
    if function == "LINEAR_EXACT":
        return np.clip((v - c) / w + 0.5, 0.0, 1.0)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (v - c) / w))
    raise ValueError(function)


def to_byte(y: np.ndarray) -> np.ndarray:
    """Step (4): floor(y * 65535) >> 8."""
    return (np.floor(y * 65535.0).astype(np.int64) >> 8).astype(np.uint8)


def render_grey(stored: np.ndarray, attrs: dict, window: str | None) -> tuple[np.ndarray, dict]:
    """Steps (1)-(5) on one frame of stored values; returns (H, W, 3) uint8 and the window."""
    v = stored.astype(np.float64)
    if "slope" in attrs and "intercept" in attrs:
        v = v * attrs["slope"] + attrs["intercept"]
    if window is not None:
        c, w = parse_window(window)
        function, source = "LINEAR", "option"
    elif "window" in attrs:
        c, w = attrs["window"]
        function, source = attrs.get("function", "LINEAR"), "file"
    else:
        lo, hi = float(v.min()), float(v.max())
        c, w = (lo + hi) / 2.0, hi - lo
        function, source = "LINEAR_EXACT", "min-max"
    if function == "LINEAR_EXACT" and w == 0.0:
        y = np.zeros_like(v)  # a constant frame: black (white for MONOCHROME1)
    else:
        y = voi(v, c, w, function)
    byte = to_byte(y)
    if attrs["pi"] == "MONOCHROME1":
        byte = 255 - byte
    applied = {"center": c, "width": w, "function": function, "source": source}
    return np.repeat(byte[:, :, None], 3, axis=2), applied


def ybr_full_to_rgb(ybr: np.ndarray) -> np.ndarray:
    """PS3.3 C.7.6.3.1.2 YBR_FULL -> RGB with pydicom's coefficients, in float64, rounded
    half up and clipped (pydicom does the same sums in float32)."""
    y, cb, cr = (ybr[..., i].astype(np.float64) for i in range(3))
    cb -= 128.0
    cr -= 128.0
    r = y + 1.402 * cr
    g = y + (-0.114 * 1.772 / 0.587) * cb + (-0.299 * 1.402 / 0.587) * cr
    b = y + 1.772 * cb
    out = np.stack([r, g, b], axis=-1) + 0.5
    return np.clip(np.floor(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Synthetic images
# ---------------------------------------------------------------------------------------------


def ct_phantom(rows: int = 24, cols: int = 32, seed: int = 16) -> np.ndarray:
    """A 12-bit CT-like slice (stored values; HU = stored - 1024): air, a body ellipse of soft
    tissue, two lungs, a bone ring and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    cy, cx = (rows - 1) / 2.0, (cols - 1) / 2.0
    hu = np.full((rows, cols), -1000.0)
    body = ((yy - cy) / (rows * 0.45)) ** 2 + ((xx - cx) / (cols * 0.45)) ** 2 <= 1.0
    hu[body] = 40.0 + 0.8 * (xx[body] - cx)
    for side in (-1, 1):
        lung = ((yy - cy) / (rows * 0.25)) ** 2 + ((xx - cx - side * cols * 0.2) / (cols * 0.12)) ** 2 <= 1.0
        hu[lung] = -820.0 + 6.0 * (yy[lung] - cy)
    ring = np.abs(np.hypot((yy - cy) / rows, (xx - cx) / cols) - 0.42) < 0.035
    hu[ring & body] = 900.0
    hu += rng.normal(0.0, 12.0, size=hu.shape)
    return np.clip(np.round(hu + 1024.0), 0, 4095).astype(np.uint16)


def signed_phantom(rows: int = 20, cols: int = 28, seed: int = 7) -> np.ndarray:
    """Signed 16-bit values from -1000 to 1500: the case where a renderer that takes the
    unsigned reading for min-max comes out nearly black."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1000.0, 1500.0, rows * cols).reshape(rows, cols)
    return np.round(ramp + rng.normal(0, 20, ramp.shape)).clip(-1000, 1500).astype(np.int16)


def smooth8(rows: int = 24, cols: int = 32) -> np.ndarray:
    """A smooth 8-bit greyscale image (for lossy JPEG)."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    v = 128 + 90 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


def rgb_image(rows: int = 16, cols: int = 24) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:cols]
    r = (xx * 255 // (cols - 1)).astype(np.uint8)
    g = (yy * 255 // (rows - 1)).astype(np.uint8)
    b = ((xx + yy) * 7 % 256).astype(np.uint8)
    return np.stack([r, g, b], axis=-1)


def smooth_rgb(rows: int = 24, cols: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    r = 128 + 100 * np.sin(xx / 6.0)
    g = 128 + 100 * np.cos(yy / 5.0)
    b = 128 + 60 * np.sin((xx + yy) / 8.0)
    return np.clip(np.round(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Writing files
# ---------------------------------------------------------------------------------------------

_counter = [0]


def next_uid() -> str:
    _counter[0] += 1
    return f"{UID_ROOT}{_counter[0]}"


def base_dataset(
    arr: np.ndarray,
    *,
    sop_class: str = CT_IMAGE,
    modality: str = "CT",
    pi: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    frames: int | None = None,
    planar: int = 0,
) -> Dataset:
    """An image data set for `arr` ((rows, cols), (rows, cols, 3) or with a leading frame
    axis when `frames` is set) with native pixel data (little endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    instance = next_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = instance
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "HUATUO_FIXTURE"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = instance
    ds.StudyInstanceUID = f"{UID_ROOT}100"
    ds.SeriesInstanceUID = f"{UID_ROOT}101"
    ds.Modality = modality
    shape = arr.shape[1:] if frames else arr.shape
    ds.Rows, ds.Columns = shape[0], shape[1]
    spp = 3 if len(shape) == 3 else 1
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = pi
    if spp == 3:
        ds.PlanarConfiguration = planar
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames:
        ds.NumberOfFrames = frames
    if spp == 3 and planar == 1:
        data = np.moveaxis(arr, -1, -3)  # (frames,) 3, rows, cols
    else:
        data = arr
    ds.PixelData = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    return ds


def save(ds: Dataset, name: str, transfer_syntax: str | None = None) -> str:
    path = os.path.join(OUT, name)
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    ts = uid.UID(ds.file_meta.TransferSyntaxUID)
    if ts == uid.ExplicitVRBigEndian:
        ds.save_as(path, implicit_vr=False, little_endian=False, enforce_file_format=True)
    elif ts == uid.ImplicitVRLittleEndian:
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
    else:
        ds.save_as(path, enforce_file_format=True)
    return path


def encapsulated(ds: Dataset, frames: list[bytes], transfer_syntax: str) -> Dataset:
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    return ds


def compress(ds: Dataset, arr: np.ndarray, transfer_syntax: str, **kwargs) -> Dataset:
    ds.compress(transfer_syntax, arr, generate_instance_uid=False, **kwargs)
    return ds


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------

CASES: list[dict] = []


def check_lossless(path: str, arr: np.ndarray) -> None:
    """pydicom must decode the file we wrote back to the array we meant."""
    got = pydicom.dcmread(path).pixel_array
    if got.shape != arr.shape or not np.array_equal(got, arr):
        raise SystemExit(f"{path}: pydicom decodes something else than what was encoded")


def add_case(
    name: str,
    file: str,
    image: np.ndarray,
    *,
    frame: int = 1,
    frames: int = 1,
    window: str | None = None,
    applied: dict | None = None,
    tolerance: int = 0,
    decoder: str = "lossless",
    meta: dict | None = None,
) -> None:
    os.makedirs(EXPECTED, exist_ok=True)
    expected = f"expected/{name}.png"
    Image.fromarray(image, "RGB").save(os.path.join(OUT, expected), optimize=False)
    CASES.append(
        {
            "name": name,
            "file": file,
            "frame": frame,
            "frames": frames,
            "window": window,
            "applied": applied,
            "expected": expected,
            "tolerance": tolerance,
            "reference_decoder": decoder,
            "meta": meta or {},
        }
    )


def grey_cases() -> None:
    ct = ct_phantom()
    ct_attrs = {"slope": 1.0, "intercept": -1024.0, "window": (40.0, 400.0), "pi": "MONOCHROME2"}

    def ct_dataset() -> Dataset:
        ds = base_dataset(ct, bits_stored=12)
        ds.RescaleSlope = "1"
        ds.RescaleIntercept = "-1024"
        ds.WindowCenter = ["40", "-600"]  # the first pair is the one used
        ds.WindowWidth = ["400", "1500"]
        ds.BodyPartExamined = "CHEST"
        ds.PixelSpacing = ["0.75", "0.75"]
        ds.SliceThickness = "5"
        return ds

    meta = {
        "modality": "CT",
        "body_part": "CHEST",
        "rows": 24,
        "columns": 32,
        "frames": 1,
        "photometric": "MONOCHROME2",
    }
    for name, ts in [
        ("ct_explicit_le", uid.ExplicitVRLittleEndian),
        ("ct_implicit_le", uid.ImplicitVRLittleEndian),
        ("ct_explicit_be", uid.ExplicitVRBigEndian),
        ("ct_deflate", uid.DeflatedExplicitVRLittleEndian),
    ]:
        ds = ct_dataset()
        if ts == uid.ExplicitVRBigEndian:
            ds.PixelData = ct.astype(">u2").tobytes()
        path = save(ds, f"{name}.dcm", ts)
        check_lossless(path, ct)
        img, applied = render_grey(ct, ct_attrs, None)
        add_case(name, f"{name}.dcm", img, applied=applied, meta=meta)

    # Windows given as options on the same file: presets and explicit ones.
    for label, window in [("lung", "lung"), ("bone", "bone"), ("explicit", "300,1200"), ("narrow", "40,1")]:
        img, applied = render_grey(ct, ct_attrs, window)
        add_case(f"ct_window_{label}", "ct_explicit_le.dcm", img, window=window, applied=applied)

    # Signed data without a window (min-max): dicom-pixeldata's nearly-black case.
    sp = signed_phantom()
    ds = base_dataset(sp, modality="MR", sop_class=MR_IMAGE, signed=True)
    path = save(ds, "signed_minmax.dcm")
    check_lossless(path, sp)
    img, applied = render_grey(sp, {"pi": "MONOCHROME2"}, None)
    add_case("signed_minmax", "signed_minmax.dcm", img, applied=applied)

    # Signed 12-bit in 16 with a rescale of slope 2.5, intercept -50, no window.
    s12 = (signed_phantom(seed=8) // 2).astype(np.int16)
    ds = base_dataset(s12, modality="MR", sop_class=MR_IMAGE, signed=True, bits_stored=12)
    ds.RescaleSlope = "2.5"
    ds.RescaleIntercept = "-50"
    path = save(ds, "signed12_rescale.dcm")
    check_lossless(path, s12)
    img, applied = render_grey(s12, {"slope": 2.5, "intercept": -50.0, "pi": "MONOCHROME2"}, None)
    add_case("signed12_rescale", "signed12_rescale.dcm", img, applied=applied)

    # A slope alone is ignored (the rule needs both).
    ds = base_dataset(s12, modality="MR", sop_class=MR_IMAGE, signed=True, bits_stored=12)
    ds.RescaleSlope = "3"
    path = save(ds, "slope_only.dcm")
    img, applied = render_grey(s12, {"pi": "MONOCHROME2"}, None)
    add_case("slope_only", "slope_only.dcm", img, applied=applied)

    # MONOCHROME1, 8-bit, min-max and an explicit window.
    m1 = smooth8(18, 22)
    ds = base_dataset(m1, modality="CR", sop_class="1.2.840.10008.5.1.4.1.1.1", pi="MONOCHROME1")
    path = save(ds, "mono1.dcm")
    check_lossless(path, m1)
    attrs = {"pi": "MONOCHROME1"}
    img, applied = render_grey(m1, attrs, None)
    add_case("mono1_minmax", "mono1.dcm", img, applied=applied)
    img, applied = render_grey(m1, attrs, "100,101")
    add_case("mono1_window", "mono1.dcm", img, window="100,101", applied=applied)

    # The file's VOI LUT function: LINEAR_EXACT and SIGMOID; a rescale with fractions.
    for function in ("LINEAR_EXACT", "SIGMOID"):
        ds = ct_dataset()
        ds.RescaleSlope = "0.5"
        ds.RescaleIntercept = "-1000.25"
        ds.WindowCenter = "-250.5"
        ds.WindowWidth = "700"
        ds.VOILUTFunction = function
        name = f"voi_{function.lower()}"
        save(ds, f"{name}.dcm")
        attrs = {"slope": 0.5, "intercept": -1000.25, "window": (-250.5, 700.0), "function": function, "pi": "MONOCHROME2"}
        img, applied = render_grey(ct, attrs, None)
        add_case(name, f"{name}.dcm", img, applied=applied)

    # A constant frame with no window.
    flat = np.full((16, 16), 77, dtype=np.uint8)
    ds = base_dataset(flat, modality="OT", sop_class=SC_IMAGE)
    save(ds, "constant.dcm")
    img, applied = render_grey(flat, {"pi": "MONOCHROME2"}, None)
    add_case("constant", "constant.dcm", img, applied=applied)

    # Three frames, unsigned 16-bit, no window: each frame has its own min-max.
    frames = np.stack([ct_phantom(16, 16, seed=s).astype(np.uint16) * (k + 1) for k, s in enumerate((1, 2, 3))])
    ds = base_dataset(frames, frames=3, bits_stored=16)
    path = save(ds, "multiframe.dcm")
    check_lossless(path, frames)
    for k in range(3):
        img, applied = render_grey(frames[k], {"pi": "MONOCHROME2"}, None)
        add_case(f"multiframe_{k + 1}", "multiframe.dcm", img, frame=k + 1, frames=3, applied=applied)

    # An enhanced multi-frame file: no rescale or window at the top level; each frame's own
    # Pixel Value Transformation and Frame VOI LUT items, pixel spacing in the shared group.
    frames = np.stack([ct_phantom(16, 16, seed=s) for s in (11, 12)])
    ds = base_dataset(frames, frames=2, bits_stored=12)
    groups = [((1.0, -1024.0), (40.0, 400.0)), ((2.0, -2048.0), (-600.0, 1500.0))]
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = ["0.5", "0.5"]
    measures.SliceThickness = "1.25"
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for (slope, intercept), (c, w) in groups:
        item = Dataset()
        transform = Dataset()
        transform.RescaleSlope = str(slope)
        transform.RescaleIntercept = str(intercept)
        transform.RescaleType = "HU"
        item.PixelValueTransformationSequence = [transform]
        voi_item = Dataset()
        voi_item.WindowCenter = str(c)
        voi_item.WindowWidth = str(w)
        item.FrameVOILUTSequence = [voi_item]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    save(ds, "enhanced_multiframe.dcm")
    for k, ((slope, intercept), window) in enumerate(groups):
        attrs = {"slope": slope, "intercept": intercept, "window": window, "pi": "MONOCHROME2"}
        img, applied = render_grey(frames[k], attrs, None)
        add_case(f"enhanced_multiframe_{k + 1}", "enhanced_multiframe.dcm", img, frame=k + 1, frames=2, applied=applied)


def colour_cases() -> None:
    rgb = rgb_image()
    for planar in (0, 1):
        ds = base_dataset(rgb, sop_class=US_IMAGE, modality="US", pi="RGB", planar=planar)
        name = f"rgb_planar{planar}"
        path = save(ds, f"{name}.dcm")
        check_lossless(path, rgb)
        add_case(name, f"{name}.dcm", rgb, meta={"modality": "US", "photometric": "RGB"})

    # YBR_FULL, native: stored as YCbCr, shown as RGB.
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    ds = base_dataset(ybr, sop_class=SC_IMAGE, modality="OT", pi="YBR_FULL")
    save(ds, "ybr_full.dcm")
    expected = ybr_full_to_rgb(ybr)
    via_pydicom = convert_color_space(ybr, "YBR_FULL", "RGB")
    diff = int(np.abs(expected.astype(int) - via_pydicom.astype(int)).max())
    print(f"ybr_full: float64 formula vs pydicom's float32 conversion: max diff {diff}")
    add_case("ybr_full", "ybr_full.dcm", expected)

    # YBR_FULL_422, native: each pair of pixels is stored as Y1 Y2 Cb Cr (chroma averaged).
    rows, cols = ybr.shape[:2]
    y = ybr[..., 0]
    cb = ybr[..., 1].reshape(rows, cols // 2, 2).astype(np.int32).mean(axis=2).round().astype(np.uint8)
    cr = ybr[..., 2].reshape(rows, cols // 2, 2).astype(np.int32).mean(axis=2).round().astype(np.uint8)
    packed = np.stack([y[:, 0::2], y[:, 1::2], cb, cr], axis=-1).reshape(rows, cols * 2)
    ds = base_dataset(ybr, sop_class=SC_IMAGE, modality="OT", pi="YBR_FULL_422")
    ds.PixelData = packed.tobytes()
    save(ds, "ybr_full_422.dcm")
    full = np.stack([y, np.repeat(cb, 2, axis=1), np.repeat(cr, 2, axis=1)], axis=-1)
    got = pydicom.dcmread(os.path.join(OUT, "ybr_full_422.dcm")).pixel_array
    ref = pydicom.pixels.processing.convert_color_space(full, "YBR_FULL", "RGB")
    assert np.array_equal(got, ref), "pydicom reads our YBR_FULL_422 layout differently"
    add_case("ybr_full_422", "ybr_full_422.dcm", ybr_full_to_rgb(full))

    # PALETTE COLOR: 8-bit indices, 200 16-bit entries starting at index 10.
    rows, cols = 16, 20
    idx = ((np.arange(rows * cols) * 37) % 256).astype(np.uint8).reshape(rows, cols)
    n, first = 200, 10
    k = np.arange(n)
    lut_r = (k * 65535 // (n - 1)).astype(np.uint16)
    lut_g = ((n - 1 - k) * 65535 // (n - 1)).astype(np.uint16)
    lut_b = ((k * 331) % 65536).astype(np.uint16)
    ds = base_dataset(idx, sop_class=US_IMAGE, modality="US", pi="PALETTE COLOR")
    for colour, lut in (("Red", lut_r), ("Green", lut_g), ("Blue", lut_b)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [n, first, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut.astype("<u2").tobytes())
        ds[f"{colour}PaletteColorLookupTableData"].VR = "OW"
    save(ds, "palette.dcm")
    pos = np.clip(idx.astype(np.int64) - first, 0, n - 1)
    expected = np.stack([(lut[pos] >> 8).astype(np.uint8) for lut in (lut_r, lut_g, lut_b)], axis=-1)
    got = pydicom.pixels.processing.apply_color_lut(idx, ds)
    assert np.array_equal((got >> 8).astype(np.uint8), expected), "palette differs from pydicom"
    add_case("palette", "palette.dcm", expected)


def compressed_cases() -> None:
    ct = ct_phantom()
    ct_attrs = {"slope": 1.0, "intercept": -1024.0, "window": (40.0, 400.0), "pi": "MONOCHROME2"}

    def ct_dataset(arr: np.ndarray = ct) -> Dataset:
        ds = base_dataset(arr, bits_stored=12)
        ds.RescaleSlope = "1"
        ds.RescaleIntercept = "-1024"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        return ds

    def lossless(name: str, ds: Dataset, arr: np.ndarray, attrs: dict, window: str | None = None) -> None:
        path = save(ds, f"{name}.dcm")
        check_lossless(path, arr)
        img, applied = render_grey(arr, attrs, window)
        add_case(name, f"{name}.dcm", img, applied=applied, window=window)

    # RLE (pydicom's own encoder), greyscale, RGB and two frames.
    lossless("ct_rle", compress(ct_dataset(), ct, uid.RLELossless), ct, ct_attrs)
    rgb = rgb_image()
    ds = compress(base_dataset(rgb, sop_class=US_IMAGE, modality="US", pi="RGB"), rgb, uid.RLELossless)
    path = save(ds, "rgb_rle.dcm")
    check_lossless(path, rgb)
    add_case("rgb_rle", "rgb_rle.dcm", rgb)
    frames = np.stack([ct_phantom(16, 16, seed=s) for s in (4, 5)])
    ds = compress(base_dataset(frames, frames=2, bits_stored=12), frames, uid.RLELossless)
    path = save(ds, "multiframe_rle.dcm")
    check_lossless(path, frames)
    for k in range(2):
        img, applied = render_grey(frames[k], {"pi": "MONOCHROME2"}, None)
        add_case(f"multiframe_rle_{k + 1}", "multiframe_rle.dcm", img, frame=k + 1, frames=2, applied=applied)

    # JPEG lossless (libjpeg-turbo 3 through imagecodecs): process 14 SV1 and predictor 6.
    for name, ts, predictor in [
        ("ct_jpeg_lossless_sv1", uid.JPEGLosslessSV1, 1),
        ("ct_jpeg_lossless", uid.JPEGLossless, 6),
    ]:
        data = imagecodecs.jpeg8_encode(ct, lossless=True, predictor=predictor, bitspersample=12)
        ds = encapsulated(ct_dataset(), [data], ts)
        lossless(name, ds, ct, ct_attrs)
    # Signed 16-bit data, JPEG lossless: the codestream holds the two's-complement bits.
    sp = signed_phantom()
    data = imagecodecs.jpeg8_encode(sp.view(np.uint16), lossless=True, predictor=1, bitspersample=16)
    ds = encapsulated(base_dataset(sp, modality="MR", sop_class=MR_IMAGE, signed=True), [data], uid.JPEGLosslessSV1)
    lossless("signed_jpeg_lossless", ds, sp, {"pi": "MONOCHROME2"})
    # Two frames of JPEG lossless, one fragment each.
    frames = np.stack([ct_phantom(16, 16, seed=s) for s in (6, 9)])
    parts = [imagecodecs.jpeg8_encode(f, lossless=True, predictor=1, bitspersample=12) for f in frames]
    ds = encapsulated(base_dataset(frames, frames=2, bits_stored=12), parts, uid.JPEGLosslessSV1)
    path = save(ds, "multiframe_jpeg_lossless.dcm")
    check_lossless(path, frames)
    for k in range(2):
        img, applied = render_grey(frames[k], {"pi": "MONOCHROME2"}, None)
        add_case(f"multiframe_jpeg_lossless_{k + 1}", "multiframe_jpeg_lossless.dcm", img, frame=k + 1, frames=2, applied=applied)

    # JPEG-LS (CharLS through pydicom): lossless, near-lossless, signed.
    lossless("ct_jpeg_ls", compress(ct_dataset(), ct, uid.JPEGLSLossless), ct, ct_attrs)
    lossless(
        "signed_jpeg_ls",
        compress(base_dataset(sp, modality="MR", sop_class=MR_IMAGE, signed=True), sp, uid.JPEGLSLossless),
        sp,
        {"pi": "MONOCHROME2"},
    )
    ds = compress(ct_dataset(), ct, uid.JPEGLSNearLossless, jls_error=3)
    path = save(ds, "ct_jpeg_ls_near.dcm")
    decoded = pydicom.dcmread(path).pixel_array
    assert np.abs(decoded.astype(int) - ct.astype(int)).max() <= 3
    img, applied = render_grey(decoded, ct_attrs, None)
    add_case("ct_jpeg_ls_near", "ct_jpeg_ls_near.dcm", img, applied=applied, decoder="CharLS (pyjpegls)")

    # JPEG 2000 (OpenJPEG through pydicom): lossless, lossy, signed, RGB. OpenJPEG's encoder
    # uses six resolution levels, so these images are at least 32 pixels on each side.
    ct40 = ct_phantom(40, 48, seed=40)
    lossless("ct_j2k_lossless", compress(ct_dataset(ct40), ct40, uid.JPEG2000Lossless), ct40, ct_attrs)
    sp32 = signed_phantom(32, 40, seed=32)
    lossless(
        "signed_j2k_lossless",
        compress(base_dataset(sp32, modality="MR", sop_class=MR_IMAGE, signed=True), sp32, uid.JPEG2000Lossless),
        sp32,
        {"pi": "MONOCHROME2"},
    )
    ds = compress(ct_dataset(ct40), ct40, uid.JPEG2000, j2k_cr=[8])
    path = save(ds, "ct_j2k.dcm")
    decoded = pydicom.dcmread(path).pixel_array
    img, applied = render_grey(decoded, ct_attrs, None)
    add_case("ct_j2k", "ct_j2k.dcm", img, applied=applied, tolerance=3, decoder="OpenJPEG (pylibjpeg-openjpeg)")
    srgb = smooth_rgb(32, 40)
    ds = base_dataset(srgb, sop_class=SC_IMAGE, modality="OT", pi="RGB")
    ds = compress(ds, srgb, uid.JPEG2000Lossless)
    path = save(ds, "rgb_j2k_lossless.dcm")
    check_lossless(path, srgb)
    add_case("rgb_j2k_lossless", "rgb_j2k_lossless.dcm", srgb)

    # JPEG baseline (8-bit) and extended (12-bit) through libjpeg-turbo 3; expected values
    # are libjpeg-turbo's decoding of the same codestream.
    g8 = smooth8()
    data = imagecodecs.jpeg8_encode(g8, level=90)
    ds = encapsulated(base_dataset(g8, modality="MR", sop_class=MR_IMAGE), [data], uid.JPEGBaseline8Bit)
    save(ds, "mr_jpeg_baseline.dcm")
    decoded = imagecodecs.jpeg8_decode(data)
    img, applied = render_grey(decoded, {"pi": "MONOCHROME2"}, None)
    add_case("mr_jpeg_baseline", "mr_jpeg_baseline.dcm", img, applied=applied, tolerance=3, decoder="libjpeg-turbo 3.1 (imagecodecs)")

    data = imagecodecs.jpeg8_encode(ct, level=90, bitspersample=12)
    ds = encapsulated(ct_dataset(), [data], uid.JPEGExtended12Bit)
    save(ds, "ct_jpeg_extended.dcm")
    decoded = imagecodecs.jpeg8_decode(data)
    img, applied = render_grey(decoded, ct_attrs, None)
    add_case("ct_jpeg_extended", "ct_jpeg_extended.dcm", img, applied=applied, tolerance=3, decoder="libjpeg-turbo 3.1 (imagecodecs)")
    img, applied = render_grey(decoded, ct_attrs, "lung")
    add_case("ct_jpeg_extended_lung", "ct_jpeg_extended.dcm", img, window="lung", applied=applied, tolerance=3, decoder="libjpeg-turbo 3.1 (imagecodecs)")

    # Colour JPEG baseline, YBR_FULL_422 (4:2:2 subsampled YCbCr in the codestream).
    data = imagecodecs.jpeg8_encode(srgb, level=92, subsampling="422")
    ds = base_dataset(srgb, sop_class=US_IMAGE, modality="US", pi="YBR_FULL_422")
    ds = encapsulated(ds, [data], uid.JPEGBaseline8Bit)
    save(ds, "ybr_jpeg_baseline.dcm")
    decoded = imagecodecs.jpeg8_decode(data)
    add_case("ybr_jpeg_baseline", "ybr_jpeg_baseline.dcm", decoded, tolerance=3, decoder="libjpeg-turbo 3.1 (imagecodecs)")

    # Colour JPEG coded as RGB (no colour transform), Photometric Interpretation RGB, with no
    # JFIF or Adobe segment and component ids 1, 2, 3: a JPEG decoder left to itself would
    # take it for YCbCr; DICOM (PS3.5 8.2.1) and pydicom take it as RGB.
    data = imagecodecs.jpeg8_encode(srgb, level=92, colorspace="RGB", outcolorspace="RGB", subsampling="444")
    decoded = imagecodecs.jpeg8_decode(data)
    bare = rgb_jpeg_without_markers(data)
    ds = base_dataset(srgb, sop_class=SC_IMAGE, modality="OT", pi="RGB")
    ds = encapsulated(ds, [bare], uid.JPEGBaseline8Bit)
    path = save(ds, "rgb_jpeg_no_transform.dcm")
    got = pydicom.dcmread(path).pixel_array
    assert np.abs(got.astype(int) - decoded.astype(int)).max() <= 3, "pydicom reads it another way"
    add_case("rgb_jpeg_no_transform", "rgb_jpeg_no_transform.dcm", decoded, tolerance=3, decoder="libjpeg-turbo 3.1 (imagecodecs)")


def rgb_jpeg_without_markers(data: bytes) -> bytes:
    """Drops the APP0/APP14 segments of a JPEG and renumbers its components 1, 2, 3."""
    out = bytearray(data[:2])
    pos = 2
    while True:
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segment = bytearray(data[pos : pos + 2 + length])
        if marker == 0xC0:
            for k in range(segment[9]):
                segment[10 + 3 * k] = k + 1
        if marker == 0xDA:
            for k in range(segment[4]):
                segment[5 + 2 * k] = k + 1
            out += segment + data[pos + 2 + length :]
            return bytes(out)
        if marker not in (0xE0, 0xEE):
            out += segment
        pos += 2 + length


# ---------------------------------------------------------------------------------------------
# Files for the error paths and for privacy
# ---------------------------------------------------------------------------------------------

IDENTIFYING = {
    "PatientName": "Quixbottom^Zephyrine^Ottoline",
    "PatientID": "PID-4471-93-QX",
    "PatientBirthDate": "19230417",
    "PatientAddress": "17 Larkspur Wynd, Fennimore Cross",
    "OtherPatientIDs": "ALT-58213-ZZ",
    "InstitutionName": "Saint Brannock Infirmary",
    "InstitutionAddress": "2 Harrowgate Close, Wexley Minor",
    "AccessionNumber": "ACC77441188",
    "ReferringPhysicianName": "Plumbrook^Thaddeus",
    "PerformingPhysicianName": "Vantongeren^Isolde",
    "OperatorsName": "Kettleby^Wystan",
    "StudyDate": "20190713",
    "SeriesDate": "20190714",
    "StudyTime": "131415",
    "StudyID": "STUDY-88123",
    "StudyDescription": "Marrowfield protocol lumbar query",
    "SeriesDescription": "Hollowmere axial sequence",
    "ImageComments": "Patient reports Brindlewick syndrome",
    "StationName": "XSTATION-QUAIL",
    "DeviceSerialNumber": "SN-99887766-QZ",
}

IDENTIFYING_PARTS = {
    "Quixbottom", "Zephyrine", "Ottoline", "Larkspur", "Fennimore", "Brannock", "Harrowgate",
    "Wexley", "Plumbrook", "Thaddeus", "Vantongeren", "Isolde", "Kettleby", "Wystan",
    "Marrowfield", "Hollowmere", "Brindlewick", "Gorseway", "XSTATION", "4471-93", "77441188",
    "58213", "88123", "99887766",
}


def special_files() -> None:
    ct = ct_phantom()

    # Made-up identifying values everywhere a scanner puts them (and a private tag).
    ds = base_dataset(ct, bits_stored=12)
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.BodyPartExamined = "CHEST"
    ds.BurnedInAnnotation = "YES"
    for keyword, value in IDENTIFYING.items():
        setattr(ds, keyword, value)
    ds.add_new(0x00090010, "LO", "HUATUO PRIVATE")
    ds.add_new(0x00091001, "LO", "Private note: Gorseway")
    save(ds, "identifying.dcm")
    values = sorted(set(IDENTIFYING.values()) | {"Gorseway"})
    # The made-up words and numbers on their own too (a name's components may be printed one
    # by one); ordinary words such as "Patient" are left out.
    parts = sorted(IDENTIFYING_PARTS)
    with open(os.path.join(OUT, "identifying.json"), "w") as f:
        json.dump({"file": "identifying.dcm", "values": values, "parts": parts}, f, indent=1)
        f.write("\n")
    img, applied = render_grey(ct, {"slope": 1.0, "intercept": -1024.0, "window": (40.0, 400.0), "pi": "MONOCHROME2"}, None)
    add_case("identifying", "identifying.dcm", img, applied=applied)

    # No preamble: the file starts with "DICM".
    with open(os.path.join(OUT, "ct_explicit_le.dcm"), "rb") as f:
        raw = f.read()
    with open(os.path.join(OUT, "no_preamble.dcm"), "wb") as f:
        f.write(raw[128:])
    img, applied = render_grey(ct, {"slope": 1.0, "intercept": -1024.0, "window": (40.0, 400.0), "pi": "MONOCHROME2"}, None)
    add_case("no_preamble", "no_preamble.dcm", img, applied=applied)

    # A bare data set (implicit VR little endian), no meta header at all.
    ds = base_dataset(smooth8(16, 16), modality="OT", sop_class=SC_IMAGE)
    del ds.file_meta
    path = os.path.join(OUT, "no_meta.dcm")
    ds.save_as(path, implicit_vr=True, little_endian=True)
    img, applied = render_grey(smooth8(16, 16), {"pi": "MONOCHROME2"}, None)
    add_case("no_meta", "no_meta.dcm", img, applied=applied)

    # An RT Plan: no pixel data.
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RT_PLAN
    ds.file_meta.MediaStorageSOPInstanceUID = next_uid()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = uid.PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = RT_PLAN
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTPLAN"
    ds.RTPlanLabel = "PLAN1"
    ds.PatientName = IDENTIFYING["PatientName"]
    save(ds, "rtplan.dcm")

    # An unsupported syntax (MPEG-4 AVC/H.264) with a junk fragment.
    ds = base_dataset(smooth8(16, 16), modality="XC", sop_class=SC_IMAGE)
    ds = encapsulated(ds, [b"\x00\x00\x00\x01" + bytes(28)], "1.2.840.10008.1.2.4.102")
    save(ds, "unsupported_mpeg4.dcm")

    # An absurd size: 65535 x 65535 pixels x 5000 frames declared, 512 bytes stored.
    ds = base_dataset(np.zeros((16, 16), dtype=np.uint16), bits_stored=16)
    ds.Rows = 65535
    ds.Columns = 65535
    ds.NumberOfFrames = 5000
    save(ds, "absurd_size.dcm")
    # The same header over a JPEG 2000 codestream (decoders would allocate the declared size).
    small = ct_phantom(32, 32)
    ds = compress(base_dataset(small, bits_stored=12), small, uid.JPEG2000Lossless)
    ds.Rows = 60000
    ds.Columns = 60000
    save(ds, "absurd_size_j2k.dcm")

    # An element that claims 0xFFFFFFF0 bytes in a file of a few hundred.
    ds = base_dataset(smooth8(16, 16), modality="OT", sop_class=SC_IMAGE)
    ds.add_new(0x00091010, "OB", b"\x11\x22\x33\x44")
    path = save(ds, "huge_length.dcm")
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    at = raw.index(b"\x09\x00\x10\x10OB\x00\x00")
    raw[at + 8 : at + 12] = struct.pack("<I", 0xFFFFFFF0)
    with open(path, "wb") as f:
        f.write(raw)


def main() -> None:
    os.makedirs(EXPECTED, exist_ok=True)
    for entry in os.listdir(EXPECTED):
        os.remove(os.path.join(EXPECTED, entry))
    for entry in os.listdir(OUT):
        if entry.endswith(".dcm"):
            os.remove(os.path.join(OUT, entry))
    grey_cases()
    colour_cases()
    compressed_cases()
    special_files()
    doc = {
        "generator": "scripts/reference/dicom.py",
        "pydicom": pydicom.__version__,
        "numpy": np.__version__,
        "libjpeg_turbo": imagecodecs.jpeg8_version(),
        "presets": {k: list(v) for k, v in PRESETS.items()},
        "cases": CASES,
    }
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    sizes = sorted((os.path.getsize(os.path.join(OUT, e)), e) for e in os.listdir(OUT) if e.endswith(".dcm"))
    print(f"{len(CASES)} cases, {len(sizes)} files, largest {sizes[-1][1]} ({sizes[-1][0]} bytes)")


if __name__ == "__main__":
    sys.exit(main())
