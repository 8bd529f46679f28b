"""Photos taken in field work: evidence of repairs, residents' reports.

An uploaded photo is untrusted bytes from a phone or a browser.  This module decides
whether those bytes are a photo we keep, reads the little metadata a case needs (where
and when it was taken), and produces the bytes we store:

    info = validate_photo(data)                  # refuse early, e.g. in a form validator
    info, full, thumb = prepare_photo(data)      # what to store
    key = store.put(info, full, thumb)           # LocalPhotoStore(root) on one server

Public API:

``validate_photo(data, *, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS) -> PhotoInfo``
    Check the bytes by content (JPEG, PNG or WebP only), size, pixel count, and that the
    image decodes completely.  Every refusal is :class:`gis.errors.InvalidInput` with
    ``field="photo"``; too many bytes is :class:`PhotoTooLarge` (413).
``prepare_photo(data, *, max_bytes=..., max_pixels=...) -> (PhotoInfo, full, thumb)``
    Validate, turn upright, strip all metadata, re-encode (JPEG q85, or PNG for PNG
    input), cap the long side at 2560 px, and make a 320 px JPEG thumbnail.
``PhotoInfo``
    Format, MIME type, upright size, byte count and SHA-256 of the *original* bytes,
    plus GPS ``(lon, lat)`` in WGS-84 and ``taken_at`` from EXIF when present.
``PhotoStore`` / ``LocalPhotoStore(root)``
    Content-addressed storage keyed ``<sha256>.jpg`` or ``<sha256>.png``.

Decisions worth knowing:

* The format is Pillow's detection with the opener limited to JPEG, PNG and WebP, so no
  other parser (GIF, TIFF, EPS via Ghostscript, ...) ever sees uploaded bytes.  A file
  name or a browser's Content-Type is never consulted.
* Pixel limits are checked from the header before any pixel is decoded.  Pillow's own
  limit (``Image.MAX_IMAGE_PIXELS``) is honoured as well, without changing it and
  without touching the process-wide warnings filters (neither is thread-safe to swap).
* EXIF is *read* for GPS and time but never *written* back: the stored image has no
  EXIF, XMP, comments or ICC profile (colours are converted to sRGB first), so a
  resident's phone model or home location is not re-published with the photo.
* Unreadable EXIF does not refuse a photo (cheap phones write broken EXIF); the photo is
  kept and ``gps`` / ``taken_at`` are ``None``.

This module must not import flask.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import tempfile
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageFile, ImageOps

from gis.errors import InvalidInput, NotFound

__all__ = [
    "FULL_MAX_SIDE",
    "JPEG_QUALITY",
    "MAX_BYTES",
    "MAX_PIXELS",
    "THUMB_SIDE",
    "LocalPhotoStore",
    "PhotoInfo",
    "PhotoStore",
    "PhotoTooLarge",
    "prepare_photo",
    "validate_photo",
]

MB = 1024 * 1024
#: Default upper bound on the uploaded bytes (a 12-50 MP phone JPEG is 2-8 MB).
MAX_BYTES = 10 * MB
#: Default upper bound on width x height.  Decoding needs up to 4 bytes per pixel, so
#: this caps one decode at about 160 MB of memory.
MAX_PIXELS = 40_000_000
#: Photos one report or one step may carry (the request size limit allows for them).
MAX_PHOTOS = 3
#: Long side of the stored image; enough to read a meter or a crack, small on disk.
FULL_MAX_SIDE = 2560
#: Long side of the thumbnail shown in lists and map pop-ups.
THUMB_SIDE = 320
JPEG_QUALITY = 85
THUMB_QUALITY = 80

# Pillow format id -> (our format name, MIME type).  MPO is what Pillow calls a JPEG
# carrying a second picture (many phones add a depth map or preview that way); the
# first picture is an ordinary JPEG, so it is accepted as one.
_FORMATS = {
    "JPEG": ("jpeg", "image/jpeg"),
    "MPO": ("jpeg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
}
# Only these openers run on uploaded bytes (smaller attack surface; see module doc).
_OPENERS = ("JPEG", "PNG", "WEBP")
_ACCEPTED = "Please upload a JPEG, PNG or WebP photo."

_TAG_ORIENTATION = 0x0112
_TAG_DATETIME_ORIGINAL = 0x9003
_IFD_EXIF = 0x8769
_IFD_GPS = 0x8825

_KEY_RE = re.compile(r"[0-9a-f]{64}\.(?:jpg|png)")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_BOMB_RE = re.compile(r"\((\d+) pixels\)")


class PhotoTooLarge(InvalidInput):
    """The uploaded photo has more bytes than allowed (413 Payload Too Large)."""

    status = 413
    code = "photo_too_large"


@dataclass(frozen=True)
class PhotoInfo:
    """What :func:`validate_photo` learnt about one uploaded photo.

    Attributes
    ----------
    format : str
        ``"jpeg"``, ``"png"`` or ``"webp"``: the format of the *uploaded* bytes.
    mime : str
        MIME type of the uploaded bytes (``image/jpeg``, ``image/png``, ``image/webp``).
    width, height : int
        Size in pixels as the photo is meant to be seen, i.e. after applying the EXIF
        orientation (a portrait phone photo is taller than wide).
    bytes : int
        Length of the uploaded bytes.
    sha256 : str
        Lower-case hex SHA-256 of the uploaded bytes; the storage key is derived from
        it, so the same upload always maps to the same stored files.
    gps : tuple of float or None
        ``(lon, lat)`` in WGS-84 decimal degrees from the EXIF GPS block, or ``None``
        when absent or nonsensical.  Note the order: longitude first, as in GeoJSON.
    taken_at : datetime or None
        EXIF ``DateTimeOriginal`` as a naive datetime (the camera's local clock).
    """

    format: str
    mime: str
    width: int
    height: int
    bytes: int
    sha256: str
    gps: tuple[float, float] | None = None
    taken_at: datetime | None = None

    @property
    def stored_ext(self) -> str:
        """File extension of the stored image: ``"png"`` for PNG uploads, else ``"jpg"``."""
        return "png" if self.format == "png" else "jpg"

    @property
    def stored_mime(self) -> str:
        """MIME type of the stored image (not of the upload; WebP is stored as JPEG)."""
        return "image/png" if self.format == "png" else "image/jpeg"

    @property
    def key(self) -> str:
        """The storage key, ``<sha256>.<stored_ext>``, that :meth:`PhotoStore.put` returns."""
        return f"{self.sha256}.{self.stored_ext}"


# --------------------------------------------------------------------------- validation


def validate_photo(
    data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> PhotoInfo:
    """Check that ``data`` is a complete JPEG, PNG or WebP photo within the limits.

    Parameters
    ----------
    data : bytes
        The uploaded file's content.  Its name and declared type are irrelevant.
    max_bytes : int, optional
        Refuse more bytes than this (default 10 MB).
    max_pixels : int, optional
        Refuse images whose header declares more than ``width * height`` pixels
        (default 40 million).  Pillow's ``Image.MAX_IMAGE_PIXELS``, if lower, also
        applies.

    Returns
    -------
    PhotoInfo
        Format, upright size, hash and EXIF GPS / time of the photo.

    Raises
    ------
    PhotoTooLarge
        ``data`` is longer than ``max_bytes`` (HTTP 413).
    gis.errors.InvalidInput
        Empty data, not a JPEG/PNG/WebP image, too many pixels (a possible
        decompression bomb), or a truncated or corrupt image.  ``field`` is ``"photo"``.
    """
    img, info = _open_checked(data, max_bytes=max_bytes, max_pixels=max_pixels)
    img.close()
    return info


def _open_checked(
    data: bytes, *, max_bytes: int, max_pixels: int
) -> tuple[ImageFile.ImageFile, PhotoInfo]:
    """Open, check and fully decode ``data``; return ``(loaded image, PhotoInfo)``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"photo data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidInput("The photo is empty (0 bytes). " + _ACCEPTED, field="photo")
    # Size first: it is the cheapest check and protects everything after it.
    if len(data) > max_bytes:
        raise PhotoTooLarge(
            f"The photo is {_mb_up(len(data))} MB, over the {_mb_limit(max_bytes)} MB limit. "
            "Please send a smaller photo (most phones can share a reduced size).",
            field="photo",
            details={"bytes": len(data), "max_bytes": max_bytes},
        )

    # Pillow's limit counts too, so that everything Pillow would warn about is refused
    # here instead; that turns DecompressionBombWarning into a refusal without swapping
    # the process-wide warnings filters.
    limit = max_pixels
    if Image.MAX_IMAGE_PIXELS is not None:
        limit = min(limit, int(Image.MAX_IMAGE_PIXELS))

    try:
        img = Image.open(io.BytesIO(data), formats=list(_OPENERS))
    except Image.DecompressionBombError as exc:
        # Pillow refuses at twice its limit before we ever see the size.
        found = _BOMB_RE.search(str(exc))
        raise _too_many_pixels(int(found.group(1)) if found else None, None, limit) from None
    except Image.DecompressionBombWarning as exc:
        # Only raised when the application runs with warnings as errors.
        found = _BOMB_RE.search(str(exc))
        raise _too_many_pixels(int(found.group(1)) if found else None, None, limit) from None
    except Exception as exc:
        # Any parser failure on untrusted bytes means "not a photo we accept", never a
        # 500.  Name what the bytes look like, so the person knows what to fix; the
        # chained cause stays in server logs.
        raise InvalidInput(_not_a_photo_message(data), field="photo") from exc

    try:
        pillow_format = img.format or ""
        if pillow_format not in _FORMATS:  # pragma: no cover - openers are limited above
            raise InvalidInput(
                f"The file is a {pillow_format or 'unknown'} image. {_ACCEPTED}", field="photo"
            )
        width, height = img.size
        if width <= 0 or height <= 0:
            raise InvalidInput("The photo has no pixels (0 width or height).", field="photo")
        # The header's size, before decoding: a few hundred bytes of PNG can declare
        # 20000 x 20000 pixels, which would need gigabytes to decode.
        if width * height > limit:
            raise _too_many_pixels(width * height, (width, height), limit)
        # LOAD_TRUNCATED_IMAGES is read, never set: it is process-wide.  With it False
        # (Pillow's default) an incomplete image raises instead of being padded grey.
        if ImageFile.LOAD_TRUNCATED_IMAGES:  # pragma: no cover - depends on other code
            warnings.warn(
                "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process; "
                "truncated photos will not be detected",
                RuntimeWarning,
                stacklevel=3,
            )
        try:
            img.load()
        except Exception as exc:
            raise InvalidInput(
                "The photo file is damaged or incomplete (was the upload cut off?). "
                "Please send it again.",
                field="photo",
            ) from exc

        fmt, mime = _FORMATS[pillow_format]
        exif = _safe_exif(img)
        orientation = _orientation(exif)
        if orientation in (5, 6, 7, 8):  # the four EXIF orientations that turn by 90°
            width, height = height, width
        info = PhotoInfo(
            format=fmt,
            mime=mime,
            width=width,
            height=height,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            gps=_gps(exif),
            taken_at=_taken_at(exif),
        )
    except BaseException:
        img.close()
        raise
    return img, info


def _too_many_pixels(
    pixels: int | None, size: tuple[int, int] | None, limit: int
) -> InvalidInput:
    if pixels is None:
        msg = f"The image has more than {limit:,} pixels (possible decompression bomb)."
    else:
        dims = f" ({size[0]:,} × {size[1]:,})" if size else ""
        msg = (
            f"The image has {pixels:,} pixels{dims}, more than the limit of {limit:,} "
            "pixels (possible decompression bomb). Please send a smaller photo."
        )
    return InvalidInput(msg, field="photo", details={"pixels": pixels, "max_pixels": limit})


def _mb_up(n: int) -> str:
    # Round *up* to 0.1 MB so a size just over the limit never prints as the limit.
    return f"{math.ceil(n / MB * 10) / 10:.1f}"


def _mb_limit(n: int) -> str:
    return f"{math.floor(n / MB * 100) / 100:g}"


def _not_a_photo_message(data: bytes) -> str:
    """A refusal naming what ``data`` looks like, from its first bytes."""
    head = data[:512]
    kind = None
    if head.startswith((b"GIF87a", b"GIF89a")):
        kind = "a GIF image"
    elif head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":
        kind = "a BMP image"
    elif head.startswith((b"II*\x00", b"MM\x00*")):
        kind = "a TIFF image"
    elif head.startswith(b"%PDF"):
        kind = "a PDF document"
    elif head.startswith(b"PK\x03\x04"):
        kind = "a ZIP archive or Office document"
    elif head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1"):
            return (
                "HEIC/HEIF photos (the iPhone default) are not accepted. " + _ACCEPTED + " "
                "(On an iPhone: Settings > Camera > Formats > Most Compatible.)"
            )
        kind = "an AVIF image" if brand in (b"avif", b"avis") else "a video"
    elif head.startswith((b"\xff\xd8", b"\x89PNG")) or (
        head.startswith(b"RIFF") and head[8:12] == b"WEBP"
    ):
        return "The photo file is damaged and cannot be read. Please send it again."
    else:
        text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        if text.startswith((b"<!doctype html", b"<html")) or b"<body" in text:
            kind = "an HTML page"
        elif text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
            kind = "an SVG drawing"
        elif text.startswith(b"<?xml"):
            kind = "an XML document"
        elif b"\x00" not in head:
            try:
                head.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                kind = "a text file"
    if kind is None:
        return "The file is not a JPEG, PNG or WebP image. " + _ACCEPTED
    return f"The file is {kind}, not a JPEG, PNG or WebP photo. " + _ACCEPTED


# ------------------------------------------------------------------------------ EXIF


def _safe_exif(img: Image.Image) -> Image.Exif | None:
    try:
        return img.getexif()
    except Exception:  # broken EXIF must not cost the resident their photo
        return None


def _orientation(exif: Image.Exif | None) -> int:
    try:
        value = int(exif.get(_TAG_ORIENTATION, 1)) if exif is not None else 1
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def _gps(exif: Image.Exif | None) -> tuple[float, float] | None:
    if exif is None:
        return None
    try:
        return _gps_from_ifd(exif.get_ifd(_IFD_GPS))
    except Exception:
        return None


def _gps_from_ifd(ifd) -> tuple[float, float] | None:
    """``(lon, lat)`` from an EXIF GPS IFD mapping, or ``None`` if absent or nonsensical.

    Tags 1/2 are latitude ref/value and 3/4 longitude ref/value; a value is up to three
    rationals: degrees, minutes, seconds.
    """
    if not ifd:
        return None
    lat = _dms(ifd.get(2), ifd.get(1), "N", "S", 90.0)
    lon = _dms(ifd.get(4), ifd.get(3), "E", "W", 180.0)
    if lat is None or lon is None:
        return None
    # (0, 0) is what many phones write when they had no fix yet.
    if lat == 0.0 and lon == 0.0:
        return None
    return lon, lat


def _dms(value, ref, positive: str, negative: str, bound: float) -> float | None:
    if value is None or ref is None:
        # Without a reference the hemisphere is a guess; a wrong guess is worse than none.
        return None
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "replace")
    ref = str(ref).strip("\x00 \t").upper()[:1]
    if ref not in (positive, negative):
        return None
    parts = value if isinstance(value, tuple | list) else (value,)
    if not 1 <= len(parts) <= 3:
        return None
    try:
        nums = [float(p) for p in parts]  # IFDRational with a 0 denominator gives nan
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not all(math.isfinite(n) and n >= 0 for n in nums):
        return None
    # Minutes or seconds beyond 60 mean a writer put decimals in the wrong field;
    # exactly 60 is a rounding artefact of some writers and harmless.
    if any(n > 60 for n in nums[1:]):
        return None
    degrees = nums[0] + sum(n / 60**i for i, n in enumerate(nums[1:], start=1))
    if degrees > bound:
        return None
    return -degrees if ref == negative else degrees


def _taken_at(exif: Image.Exif | None) -> datetime | None:
    if exif is None:
        return None
    try:
        raw = exif.get_ifd(_IFD_EXIF).get(_TAG_DATETIME_ORIGINAL)
        if raw is None:  # some writers put it in IFD0 by mistake
            raw = exif.get(_TAG_DATETIME_ORIGINAL)
    except Exception:
        return None
    return _parse_exif_datetime(raw)


def _parse_exif_datetime(raw) -> datetime | None:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if not isinstance(raw, str):
        return None
    text = raw.strip("\x00 \t")[:19]
    # EXIF says "YYYY:MM:DD HH:MM:SS"; some apps write ISO dashes or a "T".
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None  # includes the "0000:00:00 00:00:00" placeholder


# ------------------------------------------------------------------------ re-encoding


def prepare_photo(
    data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> tuple[PhotoInfo, bytes, bytes]:
    """Validate a photo and produce the bytes to store and a thumbnail.

    Parameters
    ----------
    data : bytes
        The uploaded file's content.
    max_bytes, max_pixels : int, optional
        Limits, as for :func:`validate_photo`.

    Returns
    -------
    info : PhotoInfo
        As from :func:`validate_photo` (about the *uploaded* bytes).
    full : bytes
        The image to store: upright, at most :data:`FULL_MAX_SIDE` px on its long side,
        in sRGB, with no metadata at all (no EXIF/GPS, XMP, comment or ICC profile).
        JPEG (quality :data:`JPEG_QUALITY`) for JPEG and WebP uploads; PNG for PNG
        uploads, so screenshots and plans keep sharp edges and transparency.
    thumb : bytes
        A JPEG at most :data:`THUMB_SIDE` px on its long side, transparency flattened
        onto white.

    Raises
    ------
    PhotoTooLarge, gis.errors.InvalidInput
        As :func:`validate_photo`.
    """
    img, info = _open_checked(data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        icc = img.info.get("icc_profile")
        upright = _upright(img)
        full_img = _fit(upright, FULL_MAX_SIDE)
        full_img = _to_srgb(full_img, icc)
        if info.format == "png":
            full = _encode_png(full_img)
        else:
            full = _encode_jpeg(_to_rgb(full_img), JPEG_QUALITY)
        thumb_img = _fit(_to_rgb(full_img), THUMB_SIDE)
        thumb = _encode_jpeg(thumb_img, THUMB_QUALITY)
    finally:
        img.close()
    return info, full, thumb


def _upright(img: Image.Image) -> Image.Image:
    if _orientation(_safe_exif(img)) == 1:
        return img  # no copy of a 40 MP image when nothing needs turning
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # pragma: no cover - broken EXIF: keep the photo as decoded
        return img


def _fit(img: Image.Image, side: int) -> Image.Image:
    """``img`` scaled down (never up) so its long side is at most ``side`` px."""
    if max(img.size) <= side:
        return img
    if img.mode not in ("L", "LA", "RGB", "RGBA", "CMYK", "I", "F"):
        # Palette and 1-bit images resize with nearest-neighbour only; 16-bit greys
        # are not supported by every filter.  Resize a full-colour copy instead.
        img = _to_rgb(img) if not _has_alpha(img) else img.convert("RGBA")
    # resize() rather than copy() + thumbnail(): no second full-size copy in memory.
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert pixels from an embedded ICC profile to sRGB, so the profile can be dropped.

    Phones (e.g. iPhones in Display P3) embed profiles; dropping one without converting
    dulls the colours, and keeping it would carry device-specific data.
    """
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        mode = "RGBA" if img.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(img, src, dst, outputMode=mode)
    except Exception:
        # A broken profile or a Pillow built without littlecms: slightly-off colours
        # are better than refusing the photo.
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB, transparency flattened onto white (JPEG has no alpha)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit greys would clip to white in a plain convert; scale to 8 bits first.
        scale = 1 / 256 if img.mode.startswith("I;16") or _max_value(img) > 255 else 1
        grey = img.convert("I") if img.mode != "F" else img
        return grey.point(lambda v: v * scale).convert("L").convert("RGB")
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _max_value(img: Image.Image) -> float:
    extrema = img.getextrema()
    return float(extrema[1]) if isinstance(extrema, tuple) else 255.0


def _encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    # A fresh image with empty info: JPEG's encoder copies some keys (e.g. "comment")
    # from ``info`` unless told otherwise, and we want nothing but pixels.
    _bare(img).save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    _bare(img).save(buf, "PNG")
    return buf.getvalue()


def _bare(img: Image.Image) -> Image.Image:
    """A copy of ``img`` whose ``info`` keeps only palette transparency."""
    out = img.copy()
    transparency = img.info.get("transparency")
    out.info = {} if transparency is None else {"transparency": transparency}
    return out


# --------------------------------------------------------------------------- storage


class PhotoStore(ABC):
    """Where prepared photos live.  Keys are ``<sha256>.jpg`` or ``<sha256>.png``.

    Storage is content-addressed by the SHA-256 of the uploaded bytes: putting the
    same upload twice (a retry, a double click) returns the same key and stores
    nothing new.  The flip side: two records may share one key, so a caller deleting a
    photo (including clean-up after a failed later step) must first make sure no
    other record still refers to the key.
    """

    @abstractmethod
    def put(self, info: PhotoInfo, full: bytes, thumb: bytes) -> str:
        """Store a photo prepared by :func:`prepare_photo`.

        Parameters
        ----------
        info : PhotoInfo
            The photo's info; ``info.sha256`` and ``info.format`` name the files.
        full, thumb : bytes
            The stored image and its JPEG thumbnail.

        Returns
        -------
        str
            The key, equal to ``info.key``.
        """

    @abstractmethod
    def open(self, key: str, thumb: bool = False) -> bytes:
        """The stored bytes of a photo (or of its thumbnail).

        Raises
        ------
        gis.errors.InvalidInput
            ``key`` is not a photo key.
        gis.errors.NotFound
            No photo is stored under ``key``.
        """

    def path(self, key: str, thumb: bool = False) -> Path | None:
        """A local file holding the photo, for serving it directly; ``None`` if the
        store has no local files (then use :meth:`open`)."""
        _check_key(key)
        return None

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a photo and its thumbnail; nothing happens if they do not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a photo is stored under ``key``."""


class LocalPhotoStore(PhotoStore):
    """Photos as files under ``root/ab/cd/<sha256>.jpg`` plus ``<sha256>_thumb.jpg``.

    The two-level fan-out keeps directories small.  Files are written to a temporary
    file in the target directory, flushed to disk and renamed into place, so a reader
    or a crash never sees half a photo.  The thumbnail is written first, so a stored
    full image implies its thumbnail exists.

    Parameters
    ----------
    root : pathlib.Path or str
        The directory to store under; created on the first :meth:`put`.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalPhotoStore({str(self.root)!r})"

    def _files(self, key: str) -> tuple[Path, Path]:
        _check_key(key)
        sha = key[:64]
        folder = self.root / sha[:2] / sha[2:4]
        return folder / key, folder / f"{sha}_thumb.jpg"

    def put(self, info: PhotoInfo, full: bytes, thumb: bytes) -> str:
        """Store ``full`` and ``thumb`` for ``info``; return ``info.key``.

        See :meth:`PhotoStore.put`.  Files already present are left as they are (same
        upload, same content).  If writing fails, the files this call created are
        removed again and the error propagates.
        """
        if not isinstance(info.sha256, str) or not _SHA_RE.fullmatch(info.sha256):
            raise ValueError(f"not a SHA-256 hex digest: {info.sha256!r}")
        key = info.key
        # Guard against swapped arguments: what is stored must match its file name.
        if info.stored_ext == "png":
            if bytes(full[:8]) != b"\x89PNG\r\n\x1a\n":
                raise ValueError("full image for a PNG photo is not PNG data")
        elif bytes(full[:2]) != b"\xff\xd8":
            raise ValueError("full image is not JPEG data")
        if bytes(thumb[:2]) != b"\xff\xd8":
            raise ValueError("thumbnail is not JPEG data")

        full_path, thumb_path = self._files(key)
        full_path.parent.mkdir(parents=True, exist_ok=True)
        created: list[Path] = []
        try:
            for path, blob in ((thumb_path, thumb), (full_path, full)):
                if not path.exists():
                    _atomic_write(path, bytes(blob))
                    created.append(path)
        except BaseException:
            for path in created:
                path.unlink(missing_ok=True)
            raise
        return key

    def open(self, key: str, thumb: bool = False) -> bytes:
        """The stored bytes; see :meth:`PhotoStore.open`."""
        path = self.path(key, thumb)
        try:
            return path.read_bytes()
        except FileNotFoundError:  # deleted between path() and here
            raise NotFound("Photo not found.", field="photo") from None

    def path(self, key: str, thumb: bool = False) -> Path:
        """The file holding the photo (or its thumbnail).

        Raises
        ------
        gis.errors.InvalidInput
            ``key`` is not a photo key.
        gis.errors.NotFound
            The file does not exist.
        """
        full_path, thumb_path = self._files(key)
        path = thumb_path if thumb else full_path
        if not path.is_file():
            raise NotFound("Photo not found.", field="photo")
        return path

    def delete(self, key: str) -> None:
        """Remove the photo and its thumbnail; missing files are not an error.

        Empty fan-out directories are kept: removing them could race with a
        concurrent :meth:`put` into the same directory.
        """
        full_path, thumb_path = self._files(key)
        # Full first, so exists() turns False before the thumbnail disappears.
        full_path.unlink(missing_ok=True)
        thumb_path.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        """Whether the full image for ``key`` is stored."""
        full_path, _ = self._files(key)
        return full_path.is_file()


def _check_key(key: object) -> None:
    # Only "<64 lower-case hex>.jpg|png": no separators, dots or "..", so a key can
    # never name a file outside the store.
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise InvalidInput("Not a valid photo key.", field="photo")


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # the rename must not land before the bytes do
        # mkstemp makes 0600 files; photos are meant to be served (e.g. by nginx).
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
