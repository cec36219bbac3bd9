"""Real photographs for the benchmarks: 37 camera photos of 1.3 to 20 MP from Debian packages.

    python -m benchmarks.photos [--cache .bench-cache]

The synthetic corpus (`benchmarks.corpus`) is good for speed, not for what a viewer sees.
These are photographs (landscapes, flowers, animals, objects, a night sky over water; no
drawings or renders) shipped in Debian's wallpaper packages under free licences, each named
below with its author and licence (the packages' `debian/copyright`). Nothing is committed:
the first run takes each package with `apt-get download` (the package registry, by name; no
other download), unpacks it with `dpkg-deb -x`, copies the chosen files into
`<cache>/photos/` and deletes the rest. A file already there whose SHA-256 starts as
recorded is kept; a package already installed is read from `/` instead of downloaded. When
apt cannot provide them (no apt, no package lists: run `apt-get update` once), `build`
raises `PhotosMissing` and the benchmarks that need the photos say so and skip.

`fitted(item, max_pixels)` gives a photo fitted (aspect kept, LANCZOS) to at most
`max_pixels`, as a lossless PNG in the cache: the metric and quality benchmarks compare at a
fixed size (3 MP, a product photo's size) whatever the camera's.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.corpus import DEFAULT_CACHE

# The Debian packages (bookworm) the photos come from, with the version they were chosen from
# (a newer version whose files hash differently fails loudly: choose again).
PACKAGES: dict[str, str] = {
    "lomiri-wallpapers-16.04": "20.04.0-2",
    "lomiri-wallpapers-20.04": "20.04.0-2",
    "mate-backgrounds": "1.26.0-1",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
}


@dataclass(frozen=True)
class Photo:
    """One photograph: where it is in its package, who made it, under which licence."""

    name: str
    package: str
    member: str  # the file's path inside the package
    author: str
    licence: str
    sha256: str  # the first 16 hex digits of the file's SHA-256


_LOMIRI = "usr/share/backgrounds/"
_MATE = "usr/share/backgrounds/mate/nature/"
_PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
_KDE = "GPL-2+ (Debian copyright; the wallpaper's metadata says LGPL-3)"
_MATE_L = "GPL-2+"


def _lomiri(name: str, file: str, author: str, licence: str, digest: str) -> Photo:
    return Photo(name, "lomiri-wallpapers-16.04", _LOMIRI + file, author, licence, digest)


def _mate(name: str, file: str, author: str, digest: str) -> Photo:
    return Photo(name, "mate-backgrounds", _MATE + file, author, _MATE_L, digest)


def _plasma(name: str, folder: str, author: str, digest: str) -> Photo:
    return Photo(name, "plasma-workspace-wallpapers", _PLASMA.format(folder), author, _KDE, digest)


PHOTOS: tuple[Photo, ...] = (
    _lomiri(
        "bridge",
        "Bridge_by_Sander_Klootwijk.jpg",
        "Sander Klootwijk",
        "CC-BY-SA-4.0",
        "bd86b081f9975e2b",
    ),
    _lomiri("dragonfly", "Dragonfly_by_Bolly.jpg", "Bolly", "CC-BY-SA-4.0", "af5af17841009732"),
    _lomiri(
        "fig", "Picture_0B_by_freespace.jpg", "Trevor 'Freespace'", "CC-BY-4.0", "c8c0ab18e48d9e04"
    ),
    _lomiri(
        "brushes",
        "Picture_1A_by_freespace.jpg",
        "Trevor 'Freespace'",
        "CC-BY-4.0",
        "89e86af38d04daae",
    ),
    _lomiri("wine", "Wine_by_Jakkub_Mede.jpg", "Jakub Mede", "CC-BY-4.0", "d2e96e6d4da40dd8"),
    _lomiri(
        "aitzgorri",
        "aitzgorri_by_Aitzol_Berasategi.jpg",
        "Aitzol Berasategi",
        "CC-BY-4.0",
        "66268e7b48f8854d",
    ),
    _lomiri(
        "free", "free_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0", "85a5453c2fed514c"
    ),
    _lomiri(
        "friends",
        "friends_by_Aitzol_Berasategi.jpg",
        "Aitzol Berasategi",
        "CC-BY-4.0",
        "cc40e313c74e421e",
    ),
    _lomiri(
        "clock",
        "greentock_by_Peter_Nerlich.jpg",
        "Peter Nerlich",
        "CC-BY-SA-4.0",
        "e7b20e2db9dcd6e2",
    ),
    _lomiri(
        "stream",
        "life_by_Aitzol_Berasategi.jpg",
        "Aitzol Berasategi",
        "CC-BY-4.0",
        "4c119350ead80201",
    ),
    _lomiri(
        "picos",
        "picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "Aitzol Berasategi",
        "CC-BY-4.0",
        "414d0072b2f6f2c5",
    ),
    _lomiri(
        "dandelions",
        "seeding_by_Clements_Engelhardt.jpg",
        "Clemens Engelhardt",
        "CC0-1.0",
        "a5634d1ab5e41a35",
    ),
    _lomiri(
        "sunset",
        "sunset_by_Aitzol_Berasategi.jpg",
        "Aitzol Berasategi",
        "CC-BY-4.0",
        "474dab6a4b9f94dc",
    ),
    Photo(
        "nuthatch",
        "lomiri-wallpapers-20.04",
        _LOMIRI + "Kleiber_by_Lukas_Baubkus.jpg",
        "Lukas Baubkus",
        "CC-BY-SA-3.0",
        "6572410c09f4492c",
    ),
    _mate("splash", "Aqua.jpg", "Charles Barbin", "5c30118205982da4"),
    _mate("leaf", "Blinds.jpg", "Lennart Poettering, Andrea Cimitan", "f7aac0dcc2e06d04"),
    _mate("dune", "Dune.jpg", "Marco Cogoni, Hylke Bons", "8a67c2cb0be8c46b"),
    _mate("orange-flower", "FreshFlower.jpg", "Jens Ansorg", "972b0a0c4e5e3fa9"),
    _mate("marigold", "Garden.jpg", "Charles Barbin", "d3095ee09d425ef2"),
    _mate("grass", "GreenMeadow.jpg", "Timothy Schellhase, Lapo Calamandrei", "8fa0de0aa4089f73"),
    _mate("ladybird", "LadyBird.jpg", "Charles Barbin", "e35a9a4126ef969c"),
    _mate("raindrops", "RainDrops.jpg", "'blackcombwhistler07'", "3e4ea9671c28c90a"),
    _mate("storm", "Storm.jpg", "Sergey Nazarov", "77ca53077831d323"),
    _mate("seeds", "TwoWings.jpg", "Charles Barbin, Hylke Bons", "665e5abf8a539907"),
    _mate("planks", "Wood.jpg", "Jean-François Fortin Tam", "19c78500ac00a622"),
    _mate("yellow-flower", "YellowFlower.jpg", "Charles Barbin", "254da96256acb7ad"),
    _plasma("jetty", "BytheWater", "Maciej Wiklo", "c272434ef39f2abf"),
    _plasma("pier-fog", "ColdRipple", "Risto Saukonpää", "05bef6722fc0ed81"),
    _plasma("cups", "ColorfulCups", "Dmitri Popov", "6e0f3a72feb5a4a9"),
    _plasma("lake-dusk", "DarkestHour", "Risto Saukonpää", "8e3703fae3a3c217"),
    _plasma("boats", "EveningGlow", "Ian Hex", "586682dcb362b9f6"),
    _plasma("autumn-leaf", "FallenLeaf", "Martin Klapetek", "95603a6560c7e8d5"),
    _plasma("facade", "Grey", "Sigi Sagi", "88c31d8944b7e693"),
    _plasma("kite", "Kite", "Risto Saukonpää", "bdca288ce296a981"),
    _plasma("moss", "OneStandsOut", "Risto Saukonpää", "cb507baf1dafdcae"),
    _plasma("forest-path", "Path", "Risto Saukonpää", "7477457d7f17b736"),
    _plasma("lake-night", "summer_1am", "Risto Saukonpää", "c868b50789591dd4"),
)


class PhotosMissing(RuntimeError):
    """The photographs are not in the cache and apt cannot provide them here."""


@dataclass(frozen=True)
class Item:
    """One photograph in the cache."""

    photo: Photo
    path: Path

    @property
    def size(self) -> tuple[int, int]:
        with Image.open(self.path) as image:
            return image.size

    @property
    def megapixels(self) -> float:
        width, height = self.size
        return width * height / 1e6


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _fresh(path: Path, photo: Photo) -> bool:
    return path.exists() and _digest(path) == photo.sha256


def _from_package(package: str, wanted: Sequence[Photo], folder: Path, log: bool) -> None:
    """Copy `wanted` out of `package`: from `/` when installed as recorded, else from the
    package file that `apt-get download` fetches."""
    installed = [p for p in wanted if _fresh(Path("/") / p.member, p)]
    for photo in installed:
        shutil.copyfile(Path("/") / photo.member, folder / f"{photo.name}.jpg")
    wanted = [p for p in wanted if p not in installed]
    if not wanted:
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PhotosMissing(f"no apt-get/dpkg-deb here to fetch {package}")
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        if log:
            print(f"apt-get download {package} (into {scratch})", file=sys.stderr)
        fetched = subprocess.run(  # noqa: S603 - fixed names
            ["apt-get", "download", package],  # noqa: S607 - apt from PATH
            cwd=scratch,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = list(Path(scratch).glob("*.deb"))
        if fetched.returncode != 0 or not debs:
            raise PhotosMissing(
                f"apt-get download {package} failed (run `apt-get update` once?): "
                f"{fetched.stderr.strip()[-300:]}"
            )
        unpacked = Path(scratch) / "root"
        subprocess.run(  # noqa: S603 - fixed arguments
            ["dpkg-deb", "-x", str(debs[0]), str(unpacked)],  # noqa: S607 - dpkg from PATH
            check=True,
        )
        for photo in wanted:
            source = unpacked / photo.member
            if not _fresh(source, photo):
                raise PhotosMissing(
                    f"{photo.member} in {debs[0].name} is missing or not the file recorded "
                    f"(sha256 {photo.sha256}...): the package changed, choose again"
                )
            shutil.copyfile(source, folder / f"{photo.name}.jpg")


def build(cache: Path = DEFAULT_CACHE, log: bool = False) -> list[Item]:
    """Every photograph in `cache/photos/` (fetched once); raises `PhotosMissing`."""
    folder = cache / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    missing: dict[str, list[Photo]] = {}
    for photo in PHOTOS:
        if not _fresh(folder / f"{photo.name}.jpg", photo):
            missing.setdefault(photo.package, []).append(photo)
    for package, wanted in missing.items():
        _from_package(package, wanted, folder, log)
    return [Item(photo, folder / f"{photo.name}.jpg") for photo in PHOTOS]


def fitted_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """`size` scaled (aspect kept, never enlarged) to at most `max_pixels`."""
    width, height = size
    if width * height <= max_pixels:
        return size
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def fitted(item: Item, max_pixels: int = 3_000_000) -> Path:
    """`item` fitted to at most `max_pixels` (LANCZOS), in sRGB RGB, as a PNG in the cache
    (made once)."""
    folder = item.path.parent / f"fitted-{max_pixels}"
    folder.mkdir(exist_ok=True)
    path = folder / f"{item.photo.name}.png"
    if path.exists():
        return path
    with Image.open(item.path) as source:
        rgb = source.convert("RGB")
    size = fitted_size(rgb.size, max_pixels)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    tmp = path.with_suffix(".tmp")
    rgb.save(tmp, "PNG", compress_level=1)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    try:
        items = build(args.cache, log=True)
    except PhotosMissing as exc:
        print(f"photos missing: {exc}", file=sys.stderr)
        return 1
    total = 0.0
    for item in items:
        width, height = item.size
        total += item.megapixels
        print(
            f"{item.photo.name:14} {width:5}x{height:<5} {item.megapixels:5.1f} MP  "
            f"{item.photo.package:28} {item.photo.licence:14.14}  {item.photo.author}"
        )
    print(f"{len(items)} photographs, {total:.0f} MP, in {args.cache / 'photos'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
