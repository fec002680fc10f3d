"""Image-preprocessing parity fixtures for huatuo (tests/preprocess.rs).

Reference: ../shared/docs/huatuo-reference.md §2. For every image under tests/fixtures/images/
this records in tests/fixtures/pixels.json, per image:

- `rgb`      size and SHA-256 of the uint8 [H, W, 3] `Image.open(path).convert("RGB")` (Pillow)
- `resized`  size and SHA-256 of the uint8 [Hc, Wc, 3] image after expand2square,
             CLIPImageProcessor resize and center crop, before rescale/normalize
- the Pillow mode the file opened as and `channels_last_forced` (see `DEGENERATE` below),

and once, `normalisation`: the float32 value of every uint8 level per channel after rescale +
normalize. The reference's pixel_values are exactly normalisation[c][resized[..., c]] (asserted
here for every image), so hashes plus this table check every float without storing 1.4 MB of
them per image. `--dump DIR` writes all stages as .npy files to debug a mismatch.

It first (re)creates the synthetic test images deterministically (fixed numpy seeds, Pillow
encoders), so running it twice gives identical files. `cell.png` and `hubble_deep_field.jpg`
are checked-in real images and are only read.

The processor is loaded from tests/fixtures/preprocessor_config.json (the standard
openai/clip-vit-large-patch14-336 file) with `CLIPImageProcessor.from_pretrained(dir)`.

Run from the project root:  python3 scripts/reference/pixels.py
Requirements: scripts/reference/requirements.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import zlib

import numpy as np
import PIL
import torch
import transformers
from PIL import Image, ImageDraw
from transformers import CLIPImageProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from huatuo_ref import expand2square, pixel_values  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
IMAGES = os.path.join(FIXTURES, "images")
PIXELS_JSON = os.path.join(FIXTURES, "pixels.json")

# The standard openai/clip-vit-large-patch14-336 preprocessor_config.json (19 lines).
PREPROCESSOR_CONFIG = """{
  "crop_size": 336,
  "do_center_crop": true,
  "do_normalize": true,
  "do_resize": true,
  "feature_extractor_type": "CLIPFeatureExtractor",
  "image_mean": [
    0.48145466,
    0.4578275,
    0.40821073
  ],
  "image_std": [
    0.26862954,
    0.26130258,
    0.27577711
  ],
  "resample": 3,
  "size": 336
}
"""

# Images whose padded square side is 1 or 3: transformers' infer_channel_dimension_format sees
# an (s, s, 3) array with s in (1, 3) as channels-FIRST, so the reference path raises
# ("mean must have 1 elements") for s == 1 and silently mixes rows into channels for s == 3.
# For these the fixture is computed with input_data_format="channels_last" (what the code
# means to do), and the metadata says so.
DEGENERATE = {"pixel_1x1.png"}


# ---------------------------------------------------------------------------------------------
# Synthetic images
# ---------------------------------------------------------------------------------------------

def scene(w: int, h: int, seed: int) -> np.ndarray:
    """uint8 [h, w, 3]: smooth gradients + sharp-edged shapes + a noisy band (so resampling
    meets flat areas, edges that ring and clip, and high frequencies)."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / max(w, 1) * 3.1 + rs.uniform(0, 6))
    g = 255.0 * y / max(h - 1, 1)
    b = 127.5 + 127.5 * np.cos((x + y) / max(w + h, 1) * 7.0 + rs.uniform(0, 6))
    img = np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    for _ in range(6):
        x0, x1 = sorted(rs.randint(0, max(w, 2), 2))
        y0, y1 = sorted(rs.randint(0, max(h, 2), 2))
        colour = tuple(int(c) for c in rs.choice([0, 255], 3))
        if rs.rand() < 0.5:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        else:
            draw.ellipse([x0, y0, x1, y1], outline=colour, width=2)
    img = np.array(pil)
    band = slice(h // 3, h // 3 + max(h // 6, 1))
    img[band] = rs.randint(0, 256, img[band].shape, dtype=np.uint8)
    return img


def png_bytes(w: int, h: int, bit_depth: int, colour_type: int, rows: list[bytes],
              extra: bytes = b"") -> bytes:
    """A minimal PNG (filter 0 on every row), for 16-bit layouts Pillow cannot write.
    `extra` is the payload of a tRNS chunk, if any."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    trns = chunk(b"tRNS", extra) if extra else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + trns
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def make_images() -> None:
    os.makedirs(IMAGES, exist_ok=True)

    def path(name: str) -> str:
        return os.path.join(IMAGES, name)

    # RGBA, wider than tall (even padding), alpha varies (Pillow's convert drops it).
    rgba = np.dstack([scene(64, 40, 1), np.random.RandomState(2).randint(0, 256, (40, 64))])
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(path("rgba_64x40.png"))

    # Palette (P) with a tRNS entry, taller than wide.
    pal = Image.fromarray(scene(30, 90, 3)).quantize(colors=16, method=Image.Quantize.MEDIANCUT,
                                                     dither=Image.Dither.NONE)
    pal.save(path("palette_30x90.png"), transparency=0)

    # LA (grey + alpha), taller by an odd amount (48 - 33 = 15: x offset 7).
    la = np.dstack([scene(33, 48, 4)[..., 1], np.random.RandomState(5).randint(0, 256, (48, 33))])
    Image.fromarray(la.astype(np.uint8), "LA").save(path("la_33x48.png"))

    # 16-bit greyscale (Pillow mode I;16): values 0..1023 so some survive convert('RGB'),
    # which clamps to 255, and most saturate. It has a tRNS chunk: Pillow ignores it (still
    # I;16), while the png crate expands it to grey+alpha, which must still clamp.
    g16 = (scene(48, 61, 6)[..., 0].astype(np.uint32) * 4 + np.arange(48)[None, :]).astype(">u2")
    rows = [g16[i].tobytes() for i in range(g16.shape[0])]
    with open(path("gray16_trns_48x61.png"), "wb") as f:
        f.write(png_bytes(48, 61, 16, 0, rows, extra=struct.pack(">H", int(g16[0, 0]))))

    # 16-bit grey+alpha: Pillow opens it as RGBA ("LA;16B"), keeping the high byte.
    rs = np.random.RandomState(18)
    la16 = np.dstack([scene(26, 19, 19)[..., 0].astype(np.uint32) * 257
                      + rs.randint(0, 257, (19, 26)), rs.randint(0, 65536, (19, 26))])
    la16 = la16.clip(0, 65535).astype(">u2")
    rows = [la16[i].tobytes() for i in range(la16.shape[0])]
    with open(path("la16_26x19.png"), "wb") as f:
        f.write(png_bytes(26, 19, 16, 4, rows))

    # 16-bit RGB (Pillow keeps the high byte of each sample).
    rs = np.random.RandomState(7)
    rgb16 = (scene(41, 24, 8).astype(np.uint32) * 257 + rs.randint(0, 257, (24, 41, 3))).clip(
        0, 65535).astype(">u2")
    rows = [rgb16[i].tobytes() for i in range(rgb16.shape[0])]
    with open(path("rgb16_41x24.png"), "wb") as f:
        f.write(png_bytes(41, 24, 16, 2, rows))

    # 1-bit (mode "1").
    bits = scene(37, 29, 9)[..., 1] > 127
    Image.fromarray(bits).save(path("bilevel_37x29.png"))

    # 1x1 RGB (degenerate, see DEGENERATE).
    Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)).save(path("pixel_1x1.png"))

    # Wide RGB whose padded square is exactly 336: no resampling at all (Pillow copies).
    Image.fromarray(scene(336, 200, 10)).quantize(64).convert("RGB").save(
        path("wide_336x200.png"))

    # Large RGB, downscale 700 -> 336 (drawn content so the PNG stays small).
    big = Image.new("RGB", (500, 700), (240, 235, 225))
    d = ImageDraw.Draw(big)
    rs = np.random.RandomState(11)
    for _ in range(30):
        x0, x1 = sorted(rs.randint(0, 500, 2))
        y0, y1 = sorted(rs.randint(0, 700, 2))
        colour = tuple(int(c) for c in rs.randint(0, 256, 3))
        (d.rectangle if rs.rand() < 0.5 else d.ellipse)([x0, y0, x1, y1], outline=colour,
                                                         width=int(rs.randint(1, 5)))
    for i in range(0, 500, 16):
        d.line([i, 0, 499 - i, 699], fill=(i % 256, 40, 200), width=1)
    big.save(path("large_500x700.png"), optimize=True)

    # JPEGs (libjpeg-turbo encoder via Pillow): 4:2:0 with odd sizes, 4:4:4, 4:2:2,
    # progressive 4:2:0, greyscale, CMYK (Adobe, inverted).
    Image.fromarray(scene(97, 61, 12)).save(path("jpeg420_97x61.jpg"), quality=90, subsampling=2)
    Image.fromarray(scene(80, 120, 13)).save(path("jpeg444_80x120.jpg"), quality=92, subsampling=0)
    Image.fromarray(scene(64, 47, 14)).save(path("jpeg422_64x47.jpg"), quality=85, subsampling=1)
    Image.fromarray(scene(123, 77, 15)).save(path("jpeg_progressive_123x77.jpg"), quality=88,
                                             subsampling=2, progressive=True)
    Image.fromarray(scene(45, 45, 16)[..., 2]).save(path("jpeg_gray_45x45.jpg"), quality=90)
    Image.fromarray(scene(40, 30, 17)).convert("CMYK").save(path("jpeg_cmyk_40x30.jpg"),
                                                            quality=90)


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

def stages(processor, path: str, force_last: bool):
    """(rgb, resized, pixel_values) for one image, each stage as the reference computes it."""
    img = Image.open(path)
    mode = img.mode
    rgb = img.convert("RGB")
    background = tuple(int(x * 255) for x in processor.image_mean)
    square = expand2square(rgb, background)
    fmt = "channels_last" if force_last else None
    resized = processor.preprocess(square, do_rescale=False, do_normalize=False,
                                   data_format="channels_last", input_data_format=fmt)
    resized = np.asarray(resized["pixel_values"][0])
    assert resized.dtype == np.uint8, resized.dtype
    if force_last:
        pixels = processor.preprocess(square, return_tensors="pt",
                                      input_data_format=fmt)["pixel_values"][0]
    else:
        pixels = pixel_values(processor, path)
    return mode, np.asarray(rgb), resized, pixels


def normalisation_table(processor) -> np.ndarray:
    """[3, 256] float32: the rescaled + normalised value of every uint8 level per channel,
    computed by the processor's own rescale and normalize (float64 rescale, float32 normalize)."""
    levels = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (1, 1, 3))  # [1, 256, 3]
    x = processor.rescale(levels, scale=processor.rescale_factor, input_data_format="channels_last")
    x = processor.normalize(x, mean=processor.image_mean, std=processor.image_std,
                            input_data_format="channels_last")
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32)[0].T)  # [3, 256]


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", metavar="DIR",
                    help="also write every stage of every image as .npy files, to debug a failure")
    args = ap.parse_args()
    make_images()
    with open(os.path.join(FIXTURES, "preprocessor_config.json"), "w") as f:
        f.write(PREPROCESSOR_CONFIG)
    processor = CLIPImageProcessor.from_pretrained(FIXTURES)
    table = normalisation_table(processor)
    images = {}
    for name in sorted(os.listdir(IMAGES)):
        path = os.path.join(IMAGES, name)
        force_last = name in DEGENERATE
        mode, rgb, resized, pixels = stages(processor, path, force_last)
        pixels = pixels.to(torch.float32).numpy()
        # The full pixels are a per-channel function of the uint8 image after resizing; the
        # fixture keeps that image's hash and the table instead of 1.4 MB of floats.
        expected = np.stack([table[c][resized[..., c]] for c in range(3)])
        assert np.array_equal(expected, pixels), f"{name}: pixels are not table[resized]"
        images[name] = {
            "pillow_mode": mode,
            "rgb": {"width": rgb.shape[1], "height": rgb.shape[0], "sha256": sha256(rgb)},
            "resized": {"width": resized.shape[1], "height": resized.shape[0],
                        "sha256": sha256(resized)},
            "channels_last_forced": force_last,
        }
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            for stage, arr in (("rgb", rgb), ("resized", resized), ("pixel_values", pixels)):
                np.save(os.path.join(args.dump, f"{name}.{stage}.npy"), arr)
    fixture = {
        "generated_by": {"pillow": PIL.__version__, "transformers": transformers.__version__},
        "normalisation": [[float(v) for v in row] for row in table],
        "images": images,
    }
    with open(PIXELS_JSON, "w") as f:
        json.dump(fixture, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps({n: [i["pillow_mode"], i["rgb"]["width"], i["rgb"]["height"]]
                      for n, i in images.items()}, indent=1))


if __name__ == "__main__":
    main()
