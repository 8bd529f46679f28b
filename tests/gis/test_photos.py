"""Field-work photos: checked by content, bombs and truncation refused, metadata stripped,
stored content-addressed and atomically.  Every image is generated here with Pillow."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import subprocess
import sys
import time
import warnings
import zlib
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, TiffImagePlugin
from PIL.PngImagePlugin import PngInfo

from gis import photos
from gis.errors import InvalidInput, NotFound
from gis.photos import (
    FULL_MAX_SIDE,
    MAX_BYTES,
    THUMB_SIDE,
    LocalPhotoStore,
    PhotoInfo,
    PhotoStore,
    PhotoTooLarge,
    prepare_photo,
    validate_photo,
)

REPO = Path(__file__).resolve().parents[2]
R = TiffImagePlugin.IFDRational
RED, BLUE = (255, 0, 0), (0, 0, 255)


# ----------------------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def noise(size=(200, 150), seed=0) -> Image.Image:
    """Incompressible pixels, so half the file is half the picture (not just headers)."""
    rnd = random.Random(seed)
    return Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))


def dms(value: float, sec_den: int = 10_000) -> tuple[tuple[R, R, R], float]:
    """Degrees/minutes/seconds rationals for ``abs(value)``, and the exact value written."""
    units = round(abs(value) * 3600 * sec_den)  # whole 1/sec_den seconds
    deg, rest = divmod(units, 3600 * sec_den)
    minutes, sec_units = divmod(rest, 60 * sec_den)
    sec = Fraction(sec_units, sec_den)
    written = deg + minutes / 60 + float(sec) / 3600
    return (R(deg, 1), R(minutes, 1), R(sec.numerator, sec.denominator)), written


def gps_exif(lon: float, lat: float, *, model: str = "PhoneModelX") -> tuple[Image.Exif, tuple]:
    """An EXIF block with a GPS IFD for (lon, lat); returns it and the (lon, lat) written."""
    exif = Image.Exif()
    exif[0x0110] = model  # camera model: must not survive into the stored image
    lat_dms, lat_w = dms(lat)
    lon_dms, lon_w = dms(lon)
    gps = exif.get_ifd(0x8825)
    gps[1] = "N" if lat >= 0 else "S"
    gps[2] = lat_dms
    gps[3] = "E" if lon >= 0 else "W"
    gps[4] = lon_dms
    gps[18] = "WGS-84"
    return exif, (lon_w if lon >= 0 else -lon_w, lat_w if lat >= 0 else -lat_w)


def png_declaring(width: int, height: int) -> bytes:
    """A real, tiny 1x1 PNG whose IHDR is patched to claim ``width`` x ``height``."""
    data = bytearray(encode(Image.new("RGB", (1, 1), RED), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    # The CRC covers the chunk type and data (bytes 12..29); recompute it, or Pillow
    # rejects the chunk before ever looking at the size.
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def refused(data: bytes, **limits) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        validate_photo(data, **limits)
    err = caught.value
    assert err.field == "photo"
    assert err.message and "Traceback" not in err.message
    return err


# ------------------------------------------------------------------------ valid photos


@pytest.mark.parametrize(
    "lon, lat",
    [
        (111.571234, 24.401234),  # the demo street (N, E)
        (151.209295, -33.868820),  # S, E
        (-74.006015, 40.712776),  # N, W
        (-58.381592, -34.603722),  # S, W
    ],
)
def test_jpeg_gps_and_time_taken(lon, lat):
    exif, (lon_w, lat_w) = gps_exif(lon, lat)
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 09:30:15"
    data = encode(Image.new("RGB", (64, 48), RED), "JPEG", exif=exif)

    info = validate_photo(data)

    assert (info.format, info.mime) == ("jpeg", "image/jpeg")
    assert (info.width, info.height) == (64, 48)
    assert info.bytes == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.gps is not None
    got_lon, got_lat = info.gps  # longitude first, as in GeoJSON
    assert abs(got_lon - lon_w) < 1e-6 and abs(got_lat - lat_w) < 1e-6
    assert abs(got_lon - lon) < 1e-6 and abs(got_lat - lat) < 1e-6
    assert info.taken_at == datetime(2024, 5, 1, 9, 30, 15)
    assert info.taken_at.tzinfo is None


@pytest.mark.parametrize("fmt, name", [("PNG", "png"), ("WEBP", "webp")])
def test_gps_is_read_from_png_and_webp_too(fmt, name):
    exif, (lon_w, lat_w) = gps_exif(-0.1275, 51.507222)
    data = encode(Image.new("RGB", (30, 20), BLUE), fmt, exif=exif)
    info = validate_photo(data)
    assert info.format == name
    assert info.gps == pytest.approx((lon_w, lat_w), abs=1e-6)


def test_png():
    data = encode(Image.new("RGBA", (17, 9), (0, 128, 0, 100)), "PNG")
    info = validate_photo(data)
    assert info == PhotoInfo(
        format="png",
        mime="image/png",
        width=17,
        height=9,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        gps=None,
        taken_at=None,
    )
    assert info.key == f"{info.sha256}.png" and info.stored_mime == "image/png"


def test_webp():
    data = encode(noise((33, 21)), "WEBP", quality=80)
    info = validate_photo(data)
    assert (info.format, info.mime, info.width, info.height) == ("webp", "image/webp", 33, 21)
    assert (info.gps, info.taken_at) == (None, None)
    # WebP is stored as JPEG (see prepare_photo).
    assert info.stored_ext == "jpg" and info.stored_mime == "image/jpeg"


def test_multi_picture_jpeg_from_a_phone_is_a_jpeg():
    # Pillow reports JPEGs carrying a second picture (depth map, preview) as "MPO".
    first, second = Image.new("RGB", (40, 30), RED), Image.new("RGB", (40, 30), BLUE)
    data = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    info, full, _ = prepare_photo(data)
    assert info.format == "jpeg"
    assert Image.open(io.BytesIO(full)).getpixel((20, 15))[0] > 200  # the first picture


def test_date_time_original_variants():
    assert photos._parse_exif_datetime("2023:12:31 23:59:59\x00") == datetime(
        2023, 12, 31, 23, 59, 59
    )
    assert photos._parse_exif_datetime("2023-12-31 23:59:59") == datetime(2023, 12, 31, 23, 59, 59)
    assert photos._parse_exif_datetime(b"2023:01:02 03:04:05") == datetime(2023, 1, 2, 3, 4, 5)
    assert photos._parse_exif_datetime("0000:00:00 00:00:00") is None
    assert photos._parse_exif_datetime("    :  :     :  :  ") is None
    assert photos._parse_exif_datetime(12345) is None


@pytest.mark.parametrize(
    "ifd",
    [
        {},
        {1: "N", 2: (R(95), R(0), R(0)), 3: "E", 4: (R(10), R(0), R(0))},  # lat > 90
        {1: "N", 2: (R(10), R(0), R(0)), 3: "E", 4: (R(181), R(0), R(0))},  # lon > 180
        {1: "N", 2: (R(10), R(75), R(0)), 3: "E", 4: (R(10), R(0), R(0))},  # 75 minutes
        {1: "N", 2: (R(10), R(1, 0), R(0)), 3: "E", 4: (R(10), R(0), R(0))},  # x/0
        {2: (R(10), R(0), R(0)), 3: "E", 4: (R(10), R(0), R(0))},  # no latitude ref
        {1: "X", 2: (R(10), R(0), R(0)), 3: "E", 4: (R(10), R(0), R(0))},  # bad ref
        {1: "N", 2: (R(10), R(0), R(0)), 3: "N", 4: (R(10), R(0), R(0))},  # N for lon
        {1: "N", 2: (R(0), R(0), R(0)), 3: "E", 4: (R(0), R(0), R(0))},  # no-fix 0,0
        {1: "N", 2: "garbage", 3: "E", 4: (R(10), R(0), R(0))},
        {1: "N", 2: (), 3: "E", 4: (R(10), R(0), R(0))},
        {1: "N", 2: (R(10), R(0), R(0), R(0)), 3: "E", 4: (R(10), R(0), R(0))},
    ],
)
def test_nonsensical_gps_is_none(ifd):
    assert photos._gps_from_ifd(ifd) is None


def test_gps_refs_as_bytes_and_decimal_degrees():
    ifd = {1: b"S\x00", 2: (R(3345, 100),), 3: b"w", 4: (R(151), R(30))}
    assert photos._gps_from_ifd(ifd) == pytest.approx((-151.5, -33.45))
    # 60 seconds is what some writers round 59.9999 to: harmless, not nonsense.
    ifd = {1: "N", 2: (R(24), R(23), R(60)), 3: "E", 4: (R(111), R(34), R(12))}
    assert photos._gps_from_ifd(ifd) == pytest.approx((111.57, 24.40))


def test_nonsensical_gps_in_a_real_photo_is_none_but_the_photo_is_kept():
    exif = Image.Exif()
    exif.get_ifd(0x8825).update({1: "N", 2: (R(95), R(0), R(0)), 3: "E", 4: (R(1), R(0), R(0))})
    info = validate_photo(encode(Image.new("RGB", (8, 8)), "JPEG", exif=exif))
    assert info.gps is None


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_does_not_refuse_the_photo():
    good = encode(Image.new("RGB", (8, 8), RED), "JPEG")
    payload = b"Exif\x00\x00" + b"MM\x00*\x00\x00\xff\xff" + b"\xfe" * 40
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = good[:2] + app1 + good[2:]
    info, full, _ = prepare_photo(data)
    assert (info.format, info.gps, info.taken_at) == ("jpeg", None, None)
    assert b"Exif" not in full


@settings(max_examples=200, deadline=None)
@given(
    lat=st.floats(min_value=-89.999, max_value=89.999, allow_nan=False),
    lon=st.floats(min_value=-179.999, max_value=179.999, allow_nan=False),
)
def test_gps_round_trip_through_exif_bytes(lat, lon):
    exif, written = gps_exif(lon, lat)
    loaded = Image.Exif()
    loaded.load(exif.tobytes())
    got = photos._gps(loaded)
    if written == (0.0, 0.0):
        assert got is None
    else:
        assert got == pytest.approx(written, abs=1e-6)
        assert got == pytest.approx((lon, lat), abs=1e-6)


# ------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    "data, words",
    [
        (b"Hello, this is not a photo.\nJust text renamed to photo.jpg\n", ["text"]),
        (b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", ["HTML"]),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" '
            b'height="10"><script>alert(1)</script></svg>',
            ["SVG"],
        ),
        (encode(Image.new("RGB", (10, 10), RED), "GIF"), ["GIF"]),
        (encode(Image.new("RGB", (10, 10), RED), "BMP"), ["BMP"]),
        (encode(Image.new("RGB", (10, 10), RED), "TIFF"), ["TIFF"]),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", ["PDF"]),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, ["HEIC"]),
        (bytes(random.Random(1).randbytes(4096)), ["not a JPEG, PNG or WebP"]),
    ],
    ids=["text", "html", "svg", "gif", "bmp", "tiff", "pdf", "heic", "random"],
)
def test_not_a_photo_is_refused_by_content(data, words):
    # There is no file-name parameter at all: "photo.jpg" on a GIF changes nothing.
    err = refused(data)
    assert type(err) is InvalidInput and err.status == 400
    for word in words:
        assert word in err.message
    assert "JPEG, PNG or WebP" in err.message  # says what would be accepted


def test_empty_is_refused():
    err = refused(b"")
    assert "empty" in err.message


def test_not_bytes_is_a_programming_error():
    with pytest.raises(TypeError):
        validate_photo("photo.jpg")  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_photo_is_refused(fmt):
    data = encode(noise(), fmt)
    validate_photo(data)  # the whole file is fine
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    err = refused(data[: len(data) // 2])
    assert "damaged" in err.message


def test_pixel_bomb_is_refused_from_the_header_without_decoding():
    data = png_declaring(20_000, 20_000)
    assert len(data) < 100  # a few bytes claiming 400 million pixels (1.2 GB decoded)
    filters = list(warnings.filters)
    started = time.perf_counter()
    err = refused(data)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0  # header only: decoding 400 MP would take seconds and GBs
    assert "400,000,000 pixels" in err.message
    assert "40,000,000" in err.message
    assert err.details == {"pixels": 400_000_000, "max_pixels": 40_000_000}
    assert warnings.filters == filters


def test_pixel_count_over_our_limit_but_under_pillows_is_refused():
    err = refused(png_declaring(10_000, 5_000))
    assert "50,000,000 pixels" in err.message and "10,000 × 5,000" in err.message
    assert "decompression bomb" in err.message


def test_max_pixels_applies_to_real_images():
    data = encode(Image.new("RGB", (20, 20)), "PNG")
    validate_photo(data, max_pixels=400)
    err = refused(data, max_pixels=399)
    assert "400 pixels" in err.message


def test_pillows_own_limit_is_honoured_without_changing_it():
    before = Image.MAX_IMAGE_PIXELS
    data = png_declaring(10_000, 10_000)  # over Pillow's 89.5 MP, under twice that
    with pytest.warns(Image.DecompressionBombWarning):
        err = refused(data, max_pixels=10**9)
    assert "100,000,000 pixels" in err.message
    assert Image.MAX_IMAGE_PIXELS == before


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_warning_raised_as_error_is_a_refusal():
    err = refused(png_declaring(10_000, 10_000), max_pixels=10**9)
    assert "100,000,000 pixels" in err.message


def test_header_lying_about_a_small_size_is_caught_by_decoding():
    err = refused(png_declaring(300, 300))  # within limits, but only 1 pixel of data
    assert "damaged" in err.message


def test_too_many_bytes_is_413():
    png = encode(Image.new("RGB", (1, 1), RED), "PNG")
    at_limit = png + b"\x00" * (MAX_BYTES - len(png))
    assert validate_photo(at_limit).bytes == MAX_BYTES  # trailing bytes after IEND: fine

    with pytest.raises(PhotoTooLarge) as caught:
        validate_photo(at_limit + b"\x00")
    err = caught.value
    assert isinstance(err, InvalidInput)
    assert err.status == 413 and err.field == "photo"
    assert "10.1 MB" in err.message and "10 MB limit" in err.message
    assert err.to_dict()["error"]["code"] == "photo_too_large"
    assert err.details == {"bytes": MAX_BYTES + 1, "max_bytes": MAX_BYTES}


def test_custom_byte_limit():
    data = encode(noise((50, 50)), "PNG")
    with pytest.raises(PhotoTooLarge) as caught:
        prepare_photo(data, max_bytes=len(data) - 1)
    assert "MB limit" in caught.value.message


# --------------------------------------------------------------------------- prepare


@pytest.mark.parametrize("orientation, top, bottom", [(6, RED, BLUE), (8, BLUE, RED)])
def test_orientation_is_applied_and_exif_stripped(orientation, top, bottom):
    # Sensor image 80x40: left half red, right half blue.  Orientation 6 means "turn
    # 90° clockwise to view" (left edge goes to the top), 8 the opposite.
    raw = Image.new("RGB", (80, 40), BLUE)
    raw.paste(RED, (0, 0, 40, 40))
    exif, _ = gps_exif(111.57, 24.40, model="PhoneModelX")
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 09:30:15"
    data = encode(raw, "JPEG", exif=exif, quality=95)

    info, full, thumb = prepare_photo(data)

    assert (info.width, info.height) == (40, 80)
    assert info.gps == pytest.approx((111.57, 24.40), abs=1e-6)  # kept in PhotoInfo only
    assert info.taken_at == datetime(2024, 5, 1, 9, 30, 15)
    stored = Image.open(io.BytesIO(full))
    assert stored.format == "JPEG" and stored.size == (40, 80)
    assert _near(stored.getpixel((20, 10)), top) and _near(stored.getpixel((20, 70)), bottom)
    for blob in (full, thumb):
        im = Image.open(io.BytesIO(blob))
        assert len(im.getexif()) == 0 and "exif" not in im.info
        assert b"Exif" not in blob and b"PhoneModelX" not in blob and b"WGS-84" not in blob


def _near(pixel, colour, tol=40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, colour, strict=True))


def test_stored_image_is_capped_and_thumbnail_made():
    img = Image.linear_gradient("L").resize((3000, 1500)).convert("RGB")
    info, full, thumb = prepare_photo(encode(img, "JPEG"))
    assert (info.width, info.height) == (3000, 1500)  # the upload's size
    stored, small = Image.open(io.BytesIO(full)), Image.open(io.BytesIO(thumb))
    assert stored.format == "JPEG" and stored.size == (FULL_MAX_SIDE, FULL_MAX_SIDE // 2)
    assert small.format == "JPEG" and small.size == (THUMB_SIDE, THUMB_SIDE // 2)


def test_small_images_are_not_enlarged():
    _, full, thumb = prepare_photo(encode(Image.new("RGB", (100, 60), RED), "JPEG"))
    assert Image.open(io.BytesIO(full)).size == (100, 60)
    assert Image.open(io.BytesIO(thumb)).size == (100, 60)


def test_png_stays_png_without_metadata():
    img = Image.new("RGBA", (3000, 100), (0, 0, 255, 0))  # fully transparent blue
    img.paste((255, 0, 0, 255), (0, 0, 1500, 100))
    meta = PngInfo()
    meta.add_text("Author", "Resident Zhang, 13800000000")
    exif, _ = gps_exif(111.57, 24.40)
    data = encode(img, "PNG", pnginfo=meta, exif=exif)

    info, full, thumb = prepare_photo(data)

    assert info.format == "png" and info.gps is not None
    stored = Image.open(io.BytesIO(full))
    assert stored.format == "PNG" and stored.mode == "RGBA"
    assert stored.size == (FULL_MAX_SIDE, 85)
    assert stored.getpixel((2500, 40))[3] == 0  # transparency kept
    assert not stored.text and "exif" not in stored.info
    assert b"Resident" not in full and b"eXIf" not in full and b"PhoneModelX" not in full
    small = Image.open(io.BytesIO(thumb))
    assert small.format == "JPEG" and small.mode == "RGB" and small.size == (THUMB_SIDE, 11)
    assert _near(small.getpixel((300, 5)), (255, 255, 255))  # transparent -> white
    assert _near(small.getpixel((20, 5)), RED)


def test_palette_png_with_transparency():
    img = Image.new("P", (40, 40), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (20, 0, 40, 40))
    data = encode(img, "PNG", transparency=1)
    _, full, thumb = prepare_photo(data)
    stored = Image.open(io.BytesIO(full)).convert("RGBA")
    assert stored.getpixel((30, 10))[3] == 0 and stored.getpixel((5, 10)) == (255, 0, 0, 255)
    assert _near(Image.open(io.BytesIO(thumb)).getpixel((30, 10)), (255, 255, 255))


def test_webp_is_stored_as_jpeg():
    info, full, thumb = prepare_photo(encode(Image.new("RGBA", (50, 40), (0, 0, 255, 255)), "WEBP"))
    assert info.format == "webp"
    stored = Image.open(io.BytesIO(full))
    assert stored.format == "JPEG" and stored.mode == "RGB" and stored.size == (50, 40)
    assert _near(stored.getpixel((25, 20)), BLUE)


def test_sixteen_bit_grey_png_is_not_washed_out():
    img = Image.new("I;16", (30, 30), 30_000)  # about 46% grey
    _, full, thumb = prepare_photo(encode(img, "PNG"))
    assert Image.open(io.BytesIO(full)).format == "PNG"
    grey = Image.open(io.BytesIO(thumb)).getpixel((15, 15))
    assert all(100 <= c <= 135 for c in grey)


def test_icc_profile_is_converted_and_dropped():
    ImageCms = pytest.importorskip("PIL.ImageCms")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("RGB", (20, 20), RED), "JPEG", icc_profile=icc, comment=b"secret")
    assert "icc_profile" in Image.open(io.BytesIO(data)).info
    _, full, thumb = prepare_photo(data)
    for blob in (full, thumb):
        im = Image.open(io.BytesIO(blob))
        assert "icc_profile" not in im.info and "comment" not in im.info
        assert b"secret" not in blob
        assert _near(im.getpixel((10, 10)), RED)


def test_prepare_is_deterministic():
    exif, _ = gps_exif(1.5, 2.5)
    exif[0x0112] = 6
    data = encode(noise(), "JPEG", exif=exif)
    assert prepare_photo(data) == prepare_photo(data)


def test_prepare_refuses_like_validate():
    with pytest.raises(InvalidInput):
        prepare_photo(b"GIF89a not really")
    with pytest.raises(InvalidInput):
        prepare_photo(png_declaring(20_000, 20_000))


def test_no_global_pillow_or_warnings_state_changes():
    state = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, list(warnings.filters))
    prepare_photo(encode(noise(), "JPEG"))
    for bad in (b"", b"text", png_declaring(20_000, 20_000), encode(noise(), "PNG")[:500]):
        with pytest.raises(InvalidInput):
            validate_photo(bad)
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, warnings.filters) == state


def test_module_does_not_import_flask():
    code = "import sys, gis.photos; sys.exit('flask' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# ----------------------------------------------------------------------------- storage


@pytest.fixture
def store(tmp_path) -> LocalPhotoStore:
    return LocalPhotoStore(tmp_path / "photos")


@pytest.fixture
def prepared():
    exif, _ = gps_exif(111.57, 24.40)
    return prepare_photo(encode(noise(), "JPEG", exif=exif))


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_store_round_trip(store, prepared):
    info, full, thumb = prepared
    key = store.put(info, full, thumb)
    sha = info.sha256
    assert key == info.key == f"{sha}.jpg"
    assert store.exists(key)
    assert store.open(key) == full and store.open(key, thumb=True) == thumb
    assert store.path(key) == store.root / sha[:2] / sha[2:4] / f"{sha}.jpg"
    assert store.path(key, thumb=True) == store.root / sha[:2] / sha[2:4] / f"{sha}_thumb.jpg"
    assert files_under(store.root) == [
        f"{sha[:2]}/{sha[2:4]}/{sha}.jpg",
        f"{sha[:2]}/{sha[2:4]}/{sha}_thumb.jpg",
    ]
    assert store.path(key).stat().st_mode & 0o777 == 0o644


def test_store_png(store):
    info, full, thumb = prepare_photo(encode(Image.new("RGB", (10, 10), RED), "PNG"))
    key = store.put(info, full, thumb)
    assert key.endswith(".png") and store.path(key).name == f"{info.sha256}.png"
    assert Image.open(io.BytesIO(store.open(key))).format == "PNG"
    assert Image.open(io.BytesIO(store.open(key, thumb=True))).format == "JPEG"


def test_put_is_idempotent(store, prepared):
    info, full, thumb = prepared
    key = store.put(info, full, thumb)
    stamp = store.path(key).stat().st_mtime_ns
    again = prepare_photo(encode(noise(), "JPEG", exif=gps_exif(111.57, 24.40)[0]))
    assert store.put(*again) == key  # a retry of the same upload
    assert store.path(key).stat().st_mtime_ns == stamp  # not rewritten
    assert len(files_under(store.root)) == 2


def test_put_leaves_no_temporary_files(store, prepared):
    store.put(*prepared)
    store.put(*prepare_photo(encode(noise(seed=2), "WEBP")))
    names = [Path(name).name for name in files_under(store.root)]
    assert len(names) == 4 and not any(n.startswith(".") or n.endswith(".tmp") for n in names)


def test_failed_put_leaves_nothing_behind(store, prepared, monkeypatch):
    calls = []
    real_replace = photos.os.replace

    def replace_then_fail(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the thumbnail is in place, the full image fails
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(photos.os, "replace", replace_then_fail)
    with pytest.raises(OSError, match="No space"):
        store.put(*prepared)
    assert len(calls) == 2
    assert files_under(store.root) == []  # neither the thumbnail nor a temp file
    assert not store.exists(prepared[0].key)


def test_failed_write_removes_the_temporary_file(store, prepared, monkeypatch):
    def no_sync(fd):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(photos.os, "fsync", no_sync)
    with pytest.raises(OSError, match="I/O error"):
        store.put(*prepared)
    assert files_under(store.root) == []


def test_delete(store, prepared):
    key = store.put(*prepared)
    store.delete(key)
    assert not store.exists(key)
    assert files_under(store.root) == []
    with pytest.raises(NotFound):
        store.open(key)
    with pytest.raises(NotFound):
        store.open(key, thumb=True)
    with pytest.raises(NotFound):
        store.path(key)
    store.delete(key)  # deleting twice (clean-up after a failure) is fine


def test_missing_key_is_not_found(store):
    key = "0" * 64 + ".jpg"
    assert not store.exists(key)
    with pytest.raises(NotFound) as caught:
        store.open(key)
    assert caught.value.status == 404


SHA = hashlib.sha256(b"x").hexdigest()
BAD_KEYS = [
    "../../etc/passwd",
    f"../{SHA}.jpg",
    "../../victim.jpg",
    f"{SHA}.jpg/../../victim.jpg",
    f"/{SHA}.jpg",
    f"/tmp/{SHA}.jpg",
    f"{SHA[:2]}/{SHA[2:4]}/{SHA}.jpg",
    f"{SHA}_thumb.jpg",
    f"{SHA.upper()}.jpg",
    f"{SHA}.JPG",
    f"{SHA}.gif",
    f"{SHA}.jpg\x00",
    f"{SHA}.jpg\n",
    f"{SHA[:-1]}.jpg",
    SHA,
    "",
    None,
    123,
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(store, tmp_path, key):
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"keep me")
    for call in (store.open, store.delete, store.exists, store.path):
        with pytest.raises(InvalidInput) as caught:
            call(key)
        assert caught.value.status == 400 and caught.value.field == "photo"
    with pytest.raises(InvalidInput):
        store.open(key, thumb=True)
    assert victim.read_bytes() == b"keep me"


def test_put_refuses_mismatched_arguments(store, prepared):
    info, full, thumb = prepared
    with pytest.raises(ValueError):
        store.put(info, b"not an image", thumb)
    with pytest.raises(ValueError):
        store.put(info, full, b"not an image")
    png_info, png_full, png_thumb = prepare_photo(encode(Image.new("RGB", (5, 5)), "PNG"))
    with pytest.raises(ValueError):
        store.put(png_info, png_thumb, png_full)  # swapped
    with pytest.raises(ValueError):
        store.put(PhotoInfo("jpeg", "image/jpeg", 1, 1, 1, "../" * 21 + "a"), full, thumb)
    assert files_under(store.root) == []


def test_photo_store_interface():
    with pytest.raises(TypeError):
        PhotoStore()  # abstract

    class MemoryStore(PhotoStore):
        def __init__(self):
            self.blobs = {}

        def put(self, info, full, thumb):
            self.blobs[info.key] = (full, thumb)
            return info.key

        def open(self, key, thumb=False):
            return self.blobs[key][thumb]

        def delete(self, key):
            self.blobs.pop(key, None)

        def exists(self, key):
            return key in self.blobs

    mem = MemoryStore()
    info, full, thumb = prepare_photo(encode(Image.new("RGB", (5, 5)), "JPEG"))
    key = mem.put(info, full, thumb)
    assert mem.open(key, thumb=True) == thumb and mem.path(key) is None
    with pytest.raises(InvalidInput):
        mem.path("../x")
