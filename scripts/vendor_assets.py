#!/usr/bin/env python3
"""Re-create ``webapp/static/vendor/`` (the offline copies of Folium's JS/CSS/fonts/images).

Hemei Grid runs on government intranets without internet access, so every script,
stylesheet, font and image the Folium maps use is served by the app itself from
``webapp/static/vendor/<package>@<version>/...``.  ``gis/assets.py`` maps each CDN URL
that folium/branca/plugins reference to a file in that folder.

The vendored files are COMMITTED to the repository.  This script is NOT run at install
or test time; it is for maintainers who upgrade folium/branca or a Leaflet plugin.

How to run (from the repository root; needs ``npm`` on PATH and access to the npm
registry and PyPI through the ordinary clients, i.e. ``npm pack`` and ``pip download``)::

    .venv/bin/python scripts/vendor_assets.py            # rebuild webapp/static/vendor/
    .venv/bin/python scripts/vendor_assets.py --check    # rebuild into a temp dir and
                                                         # compare with the committed copy
    .venv/bin/python scripts/vendor_assets.py --dest /tmp/vendor   # build elsewhere

Upgrading a package:
  1. change its ``version`` below, set ``integrity`` to the new value printed by
     ``npm pack --dry-run --json <name>@<version>`` (or ``sha256`` for PyPI wheels),
     and adjust ``files`` if the dist layout changed;
  2. update the URL -> path mapping ``VENDOR`` in ``gis/assets.py`` to the new CDN URLs
     that folium/branca use (``localise`` raises ValueError for any URL it doesn't know);
  3. run this script, then ``.venv/bin/python -m pytest tests/gis/test_assets.py``.

Sources:
  * npm tarballs (``npm pack``), checked against the pinned sha512 ``integrity``;
  * the folium wheel from PyPI (``pip download``), checked against the pinned sha256:
    folium loads ``leaflet_heat.min.js`` from its own GitHub repository; the same file
    ships inside the folium wheel (it contains a weights patch not in npm's leaflet.heat);
  * two small files are generated here (see ``_rotate_css`` and ``_glyphicons_css``),
    because their CDN originals are not on npm.
"""

from __future__ import annotations

import argparse
import base64
import filecmp
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO_ROOT / "webapp" / "static" / "vendor"


@dataclass(frozen=True)
class Package:
    """One vendored package.

    ``files``: paths inside the package to keep; a plain string keeps the same relative
    path, a ``(source, destination)`` pair renames.  Everything lands in
    ``<dest>/<name>@<version>/``.
    ``generated``: destination path -> name of a generator function below.
    ``license``: for packages that ship no licence file: (SPDX id, copyright line) used
    to write a LICENSE file (the licence is taken from the package's package.json).
    """

    name: str
    version: str
    source: str  # "npm" or "pypi"
    integrity: str  # npm: "sha512-<base64>", pypi: "sha256:<hex>" of the wheel
    files: tuple[str | tuple[str, str], ...]
    generated: dict[str, str] = field(default_factory=dict)
    license: tuple[str, str] | None = None
    note: str = ""

    @property
    def dirname(self) -> str:
        return f"{self.name}@{self.version}"


MANIFEST: tuple[Package, ...] = (
    Package(
        "leaflet",
        "1.9.3",
        "npm",
        "sha512-iB2cR9vAkDOu5l3HAay2obcUHZ7xwUBBjph8+PGtmW/2lYhbLizWtG7nTeYht36WfOslixQF9D/uSIzhZgGMfQ==",
        (
            "LICENSE",
            "dist/leaflet.js",
            "dist/leaflet.css",
            "dist/images/layers.png",
            "dist/images/layers-2x.png",
            "dist/images/marker-icon.png",
            "dist/images/marker-icon-2x.png",
            "dist/images/marker-shadow.png",
        ),
    ),
    Package(
        "jquery",
        "3.7.1",
        "npm",
        "sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2BsfpTYrTRysYUdADVD7CkUUizgkpLfg==",
        ("LICENSE.txt", "dist/jquery.min.js"),
    ),
    Package(
        "bootstrap",
        "5.2.2",
        "npm",
        "sha512-dEtzMTV71n6Fhmbg4fYJzQsw1N29hJKO1js5ackCgIpDcGid2ETMGC6zwSYw09v05Y+oRdQ9loC54zB1La3hHQ==",
        ("LICENSE", "dist/js/bootstrap.bundle.min.js", "dist/css/bootstrap.min.css"),
    ),
    Package(
        # folium loads bootstrap 3.0.0's bootstrap-glyphicons.css (used by awesome markers
        # with prefix="glyphicon", folium.Icon's default). 3.0.0 is not on npm; 3.1.1 is the
        # nearest. That standalone css file does not exist in the npm package, so it is
        # derived from dist/css/bootstrap.css (the @font-face and the .glyphicon* rules).
        "bootstrap",
        "3.1.1",
        "npm",
        "sha512-TAzqS8E/ISpVHP29gYhy+1NSV+FJwApDVQhDfgLYsIuUDJiqJzH2DfORN5tiu+Ie2iBLrzEG34t4Rf465cigqg==",
        (
            "LICENSE",
            "dist/fonts/glyphicons-halflings-regular.eot",
            "dist/fonts/glyphicons-halflings-regular.svg",
            "dist/fonts/glyphicons-halflings-regular.ttf",
            "dist/fonts/glyphicons-halflings-regular.woff",
        ),
        generated={"dist/css/bootstrap-glyphicons.css": "_glyphicons_css"},
        note="folium references 3.0.0 (not on npm); nearest 3.1.1 used",
    ),
    Package(
        "@fortawesome/fontawesome-free",
        "6.2.0",
        "npm",
        "sha512-CNR7qRIfCwWHNN7FnKUniva94edPdyQzil/zCwk3v6k4R6rR2Fr8i4s3PM7n/lyfPA6Zfko9z5WDzFxG9SW1uQ==",
        (
            "LICENSE.txt",
            "css/all.min.css",
            "webfonts/fa-brands-400.ttf",
            "webfonts/fa-brands-400.woff2",
            "webfonts/fa-regular-400.ttf",
            "webfonts/fa-regular-400.woff2",
            "webfonts/fa-solid-900.ttf",
            "webfonts/fa-solid-900.woff2",
            "webfonts/fa-v4compatibility.ttf",
            "webfonts/fa-v4compatibility.woff2",
        ),
    ),
    Package(
        # The npm name "leaflet.awesome-markers" has no 2.0.2; drmonty's package is a
        # republication of lvoogdt's Leaflet.awesome-markers 2.0.2 (what cdnjs serves).
        "drmonty-leaflet-awesome-markers",
        "2.0.2",
        "npm",
        "sha512-g508pdnnHQr9l4kU6McvJzcSd0w1FvHFlZZCYc4oT+zjwYJi1qtj0fFBFEWMKoNfHK4UcBya1eccyjKfu4chjQ==",
        (
            "js/leaflet.awesome-markers.js",
            "css/leaflet.awesome-markers.css",
            "css/images/markers-soft.png",
            "css/images/markers-soft@2x.png",
            "css/images/markers-shadow.png",
            "css/images/markers-shadow@2x.png",
        ),
        license=("MIT", "Copyright (c) 2012-2013 Lennard Voogdt"),
        note="Leaflet.awesome-markers 2.0.2 as republished on npm by drmonty",
    ),
    Package(
        "leaflet.markercluster",
        "1.1.0",
        "npm",
        "sha512-eI+XkCiLiHwCC3uZ4/n4+Vq3rXcqEHN2lhHRVG1WVziy/3Q0TTipWkzEa1zO0dKZI2AnI5ppFDWrOjnQ7MJLKQ==",
        (
            "MIT-LICENCE.txt",
            "dist/leaflet.markercluster.js",
            "dist/MarkerCluster.css",
            "dist/MarkerCluster.Default.css",
        ),
    ),
    Package(
        "leaflet-minimap",
        "3.6.1",
        "npm",
        "sha512-6px8f6cfv1rKB6ACpL6bbUFGxipZOq4KsntJgBj9nOcW1RYa5+xFp8emOZwks9X+VtVVsQEwWwfgT1kTTL/LzA==",
        (
            "LICENSE.txt",
            "dist/Control.MiniMap.min.js",
            "dist/Control.MiniMap.min.css",
            "dist/images/toggle.png",
            "dist/images/toggle.svg",
        ),
    ),
    Package(
        "leaflet.locatecontrol",
        "0.66.2",
        "npm",
        "sha512-33xCfRydyjLfh9nGvf4kSTM0tA1EFFgM0z4uj75QkUwIc9cz0vJqWABsyDirLm1GBKeEr8/krcnc10X1YuK7oA==",
        ("LICENSE", "dist/L.Control.Locate.min.js", "dist/L.Control.Locate.min.css"),
    ),
    Package(
        "leaflet-search",
        "2.9.7",
        "npm",
        "sha512-v7CxEbXyQXqLFjSkTpvM5i1cvmrcPOos57UmTnR94qqvVZykXyz/0SKEs3cbkFHjyrmMQ3Yk2Q5W6PvyuiSuPg==",
        (
            "license.txt",
            "dist/leaflet-search.min.js",
            "dist/leaflet-search.min.css",
            "images/search-icon.png",
            "images/loader.gif",
        ),
    ),
    Package(
        # jsDelivr serves an auto-minified Control.FullScreen.min.js; the npm package only
        # has the unminified Control.FullScreen.js.
        "leaflet.fullscreen",
        "3.0.0",
        "npm",
        "sha512-81wWSUXz1ZtdneR0v5eJDWXUSx+Zo5J50WXWeydG/UcILfIEAgz/iOjZSi3p00Z9MJ/FC/P5i3CgdYuEAos0yQ==",
        ("LICENSE", "Control.FullScreen.js", "Control.FullScreen.css", "icon-fullscreen.svg"),
    ),
    Package(
        "leaflet-draw",
        "1.0.2",
        "npm",
        "sha512-iCcbXE9okhwznoTXjxVjoGFoKeiWGsgmWPKrPAeHUvtWZWK4t6YF6815D13wZoMxX2UM6tOmD7/VofCxx3S0+w==",
        (
            "dist/leaflet.draw.js",
            "dist/leaflet.draw.css",
            "dist/images/spritesheet.png",
            "dist/images/spritesheet-2x.png",
            "dist/images/spritesheet.svg",
        ),
        license=("MIT", "Copyright (c) 2012-2017, Jacob Toye, Jon West, Smartrak, Leaflet"),
    ),
    Package(
        "leaflet-realtime",
        "2.2.0",
        "npm",
        "sha512-Z7xbUNdhvwngJUf3plG9Zw3SaGHzcOzi59tVS3jD0GcS6cOWbRNNfP2biwmtHbufM5VYTIWLATrQ4vrlGI23WA==",
        ("LICENSE.md", "dist/leaflet-realtime.js"),
    ),
    Package(
        # folium loads ardhi/Leaflet.MousePosition straight from GitHub; this npm package is
        # a republication of the same plugin (unminified src/ files).
        "leaflet-mouse-position",
        "1.2.0",
        "npm",
        "sha512-iKS25GZDRdoKZn0O5sjTyNcBYrq/wenLiOidj4jJ5iD4SfhyqVj+bJHgBwuMxOlf8Vc/9B1ZPlqYV4QA97nyFg==",
        ("MIT-LICENCE.txt", "src/L.Control.MousePosition.js", "src/L.Control.MousePosition.css"),
    ),
    Package(
        # branca's colormap legends load d3 v3 from cdnjs.
        "d3",
        "3.5.5",
        "npm",
        "sha512-JPx0wEFxcYVcCZXgUbsy8NzVzD3zKat1KLtdCeOHPsmrpFlc09nr2/5Ls9ey7mo8SV6cWew0piLrmPVybj9I8w==",
        ("LICENSE", "d3.min.js"),
    ),
    Package(
        # folium's HeatMap loads folium/templates/leaflet_heat.min.js from GitHub; the
        # identical file ships in the folium wheel.  leaflet.awesome.rotate.min.css (also
        # from folium's GitHub, not in the wheel) is generated.
        "folium",
        "0.20.0",
        "pypi",
        "sha256:f0bc2a92acde20bca56367aa5c1c376c433f450608d058daebab2fc9bf8198bf",
        (
            ("folium-0.20.0.dist-info/licenses/LICENSE.txt", "LICENSE.txt"),
            "folium/templates/leaflet_heat.min.js",
        ),
        generated={"folium/templates/leaflet.awesome.rotate.min.css": "_rotate_css"},
    ),
    Package(
        # The browsable API documentation (/api/v1/docs, webapp/templates/apidoc.html):
        # the self-contained bundle and its stylesheet (images are data: URIs); no
        # standalone preset, no source maps.
        "swagger-ui-dist",
        "5.35.0",
        "npm",
        "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==",
        (
            "LICENSE",
            "NOTICE",
            "swagger-ui-bundle.js",
            "swagger-ui-bundle.js.LICENSE.txt",
            "swagger-ui.css",
        ),
    ),
)


MIT_TEXT = """\
{copyright}

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
THE SOFTWARE.
"""


# --------------------------------------------------------------------------- generators
def _rotate_css(pkg_root: Path) -> str:
    """Equivalent of folium's templates/leaflet.awesome.rotate.min.css.

    folium.Icon(angle=N) adds the class ``fa-rotate-N`` to the awesome-marker icon; the
    original file (loaded from folium's GitHub repository, not shipped in the wheel) is
    one rule per whole degree.  This regenerates it.
    """
    rules = "".join(
        f".fa-rotate-{n}{{-webkit-transform:rotate({n}deg);transform:rotate({n}deg)}}"
        for n in range(0, 361)
    )
    header = (
        "/* Generated by scripts/vendor_assets.py. Replaces folium's "
        "templates/leaflet.awesome.rotate.min.css (loaded by folium from GitHub):\n"
        "   .fa-rotate-N for N = 0..360 degrees, used by folium.Icon(angle=N). MIT. */\n"
    )
    return header + rules + "\n"


def _glyphicons_css(pkg_root: Path) -> str:
    """Standalone Glyphicons Halflings stylesheet derived from Bootstrap 3's bootstrap.css.

    Replaces netdna.bootstrapcdn.com/bootstrap/3.0.0/css/bootstrap-glyphicons.css (no such
    file on npm): keeps the @font-face and every rule whose selectors are all
    ``.glyphicon...``, so it can sit next to Bootstrap 5 without pulling in Bootstrap 3.
    """
    text = (pkg_root / "dist" / "css" / "bootstrap.css").read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    kept: list[str] = []
    for m in re.finditer(r"([^{}]+)\{([^{}]*)\}", text):
        selector = " ".join(m.group(1).split())
        body = " ".join(m.group(2).split())
        if selector == "@font-face" and "Glyphicons Halflings" in body:
            kept.append(f"@font-face {{ {body} }}")
        elif all(s.strip().startswith(".glyphicon") for s in selector.split(",")):
            kept.append(f"{selector} {{ {body} }}")
    if not kept or not kept[0].startswith("@font-face"):
        raise RuntimeError("could not find the Glyphicons rules in bootstrap.css")
    header = (
        "/* Generated by scripts/vendor_assets.py from Bootstrap 3.1.1 dist/css/bootstrap.css.\n"
        "   Replaces bootstrap/3.0.0/css/bootstrap-glyphicons.css (loaded by folium from a CDN):\n"
        "   only the Glyphicons Halflings @font-face and .glyphicon* rules. Bootstrap: MIT,\n"
        "   (c) Twitter, Inc.; Glyphicons Halflings font (c) Jan Kovarik, licensed for Bootstrap.\n"
        "*/\n"
    )
    return header + "\n".join(kept) + "\n"


GENERATORS = {"_rotate_css": _rotate_css, "_glyphicons_css": _glyphicons_css}


# --------------------------------------------------------------------------- fetching
def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return proc.stdout


def _fetch_npm(pkg: Package, work: Path) -> Path:
    spec = f"{pkg.name}@{pkg.version}"
    out = _run(["npm", "pack", spec, "--json", "--ignore-scripts", "--silent"], cwd=work)
    info = json.loads(out)[0]
    tgz = work / info["filename"]
    digest = base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
    if f"sha512-{digest}" != pkg.integrity:
        raise RuntimeError(f"{spec}: integrity mismatch: got sha512-{digest}")
    root = work / f"unpacked-{pkg.dirname.replace('/', '_')}"
    root.mkdir()
    with tarfile.open(tgz) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            # npm tarballs have one top-level folder (usually "package/"); strip it.
            rel = Path(*Path(member.name).parts[1:])
            if ".." in rel.parts or rel.is_absolute():
                raise RuntimeError(f"{spec}: unsafe path in tarball: {member.name}")
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            target.write_bytes(src.read())
    return root


def _fetch_pypi(pkg: Package, work: Path) -> Path:
    spec = f"{pkg.name}=={pkg.version}"
    dl = work / f"pypi-{pkg.name}"
    dl.mkdir()
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            spec,
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
            str(dl),
        ],
        cwd=work,
    )
    wheels = list(dl.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"{spec}: expected one wheel, got {wheels}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if f"sha256:{digest}" != pkg.integrity:
        raise RuntimeError(f"{spec}: sha256 mismatch: got {digest}")
    root = work / f"unpacked-{pkg.name}"
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extractall(root)
    return root


# --------------------------------------------------------------------------- building
def build(dest: Path) -> None:
    """Build the complete vendor tree into ``dest`` (which must not exist yet)."""
    dest.mkdir(parents=True)
    summary = []
    with tempfile.TemporaryDirectory(prefix="hemei-vendor-") as tmp:
        work = Path(tmp)
        for pkg in MANIFEST:
            print(f"  {pkg.source}: {pkg.dirname}", file=sys.stderr)
            fetch = _fetch_npm if pkg.source == "npm" else _fetch_pypi
            root = fetch(pkg, work)
            out = dest / pkg.dirname
            kept: list[str] = []
            for entry in pkg.files:
                src_rel, dst_rel = (entry, entry) if isinstance(entry, str) else entry
                src = root / src_rel
                if not src.is_file():
                    raise RuntimeError(f"{pkg.dirname}: {src_rel} not in the package")
                target = out / dst_rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
                kept.append(dst_rel)
            for dst_rel, gen_name in pkg.generated.items():
                target = out / dst_rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(GENERATORS[gen_name](root), encoding="utf-8")
                kept.append(dst_rel)
            if pkg.license is not None:
                spdx, copyright_line = pkg.license
                if spdx != "MIT":
                    raise RuntimeError(f"{pkg.dirname}: no licence template for {spdx}")
                text = (
                    f"{pkg.name}@{pkg.version} ships no licence file; its package.json "
                    f"declares the {spdx} licence:\n\n" + MIT_TEXT.format(copyright=copyright_line)
                )
                (out / "LICENSE").write_text(text, encoding="utf-8")
                kept.append("LICENSE")
            summary.append(
                {
                    "name": pkg.name,
                    "version": pkg.version,
                    "source": pkg.source,
                    "integrity": pkg.integrity,
                    "note": pkg.note,
                    "files": sorted(kept),
                }
            )
    (dest / "MANIFEST.json").write_text(
        json.dumps(
            {"generated_by": "scripts/vendor_assets.py", "packages": summary},
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    _check_css_references(dest)


def _check_css_references(dest: Path) -> None:
    """Every url(...) in the vendored CSS must be a data: URI or an existing local file."""
    problems = []
    for css in dest.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"url\(\s*(['\"]?)(.*?)\1\s*\)", text):
            ref = m.group(2)
            if ref.startswith(("data:", "#")):
                continue
            if re.match(r"^(?:[a-z]+:)?//", ref, re.I):
                problems.append(f"{css.relative_to(dest)}: external {ref}")
                continue
            path = re.split(r"[?#]", ref, maxsplit=1)[0]
            if not (css.parent / path).is_file():
                problems.append(f"{css.relative_to(dest)}: missing {ref}")
    if problems:
        raise RuntimeError("broken CSS references:\n  " + "\n  ".join(problems))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def check(dest: Path) -> int:
    """Rebuild into a temp dir and compare with ``dest``; return a process exit code."""
    with tempfile.TemporaryDirectory(prefix="hemei-vendor-check-") as tmp:
        fresh = Path(tmp) / "vendor"
        build(fresh)
        want, have = _tree(fresh), _tree(dest) if dest.is_dir() else set()
        diffs = [f"missing: {p}" for p in sorted(want - have)]
        diffs += [f"extra:   {p}" for p in sorted(have - want)]
        diffs += [
            f"differs: {p}"
            for p in sorted(want & have)
            if not filecmp.cmp(fresh / p, dest / p, shallow=False)
        ]
    for line in diffs:
        print(line)
    print("vendor folder is up to date" if not diffs else f"{len(diffs)} difference(s)")
    return 1 if diffs else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="vendor folder")
    parser.add_argument(
        "--check", action="store_true", help="compare a fresh build with --dest, change nothing"
    )
    args = parser.parse_args(argv)
    if shutil.which("npm") is None:
        parser.error("npm is not on PATH")
    dest: Path = args.dest.resolve()
    if args.check:
        return check(dest)
    staging = dest.with_name(dest.name + ".new")
    if staging.exists():
        shutil.rmtree(staging)
    build(staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"wrote {dest} ({len(_tree(dest))} files, {total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
