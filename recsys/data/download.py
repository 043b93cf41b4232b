"""Finding a dataset's files: explicit folder, data home, cache, embedded copy, verified download.

Search order (the first folder holding any accepted file wins; inside a folder the
registry's file order decides, so an official file beats a derived one):

1. ``data_dir`` when given, and its sub-folders named in ``DatasetInfo.folders``. An explicit
   folder is authoritative: nothing else is searched and nothing is downloaded.
2. ``$RECSYS_DATA_HOME/<folder>`` for each registered folder name, then ``$RECSYS_DATA_HOME``.
3. The cache, ``$RECSYS_CACHE/<name>`` (default ``~/.cache/recsys/<name>``).
4. The copy shipped inside the package (embedded datasets only).
5. A download of ``DatasetInfo.url`` into the cache, checked against ``DatasetInfo.sha256``,
   unless ``download=False`` or ``$RECSYS_OFFLINE`` is set.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import shutil
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from recsys.data.registry import DatasetInfo
from recsys.errors import DataError
from recsys.io import atomic_path

log = logging.getLogger(__name__)

ENV_HOME = "RECSYS_DATA_HOME"
ENV_CACHE = "RECSYS_CACHE"
ENV_OFFLINE = "RECSYS_OFFLINE"
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"


@dataclass(frozen=True)
class Source:
    """One located input: a file (plain or .gz), a folder, or a member of a zip archive.

    ``name`` is the registry file name it stands for (``ratings.dat`` for ``ratings.dat.gz`` or
    for ``ml-1m/ratings.dat`` inside ``ml-1m.zip``); loaders pick their parser by it.
    """

    path: Path
    name: str
    member: str | None = None

    @property
    def label(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """Binary stream of the (decompressed) content; a damaged archive is a DataError."""
        try:
            with self._open() as f:
                yield f
        except (EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile) as err:
            raise DataError(f"{self.label}: cannot decompress it ({err}); the file is damaged or is not "
                            f"the archive its name says: download or extract it again") from None

    @contextlib.contextmanager
    def _open(self) -> Iterator[BinaryIO]:
        if self.member is not None:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as raw:
                if self.member.endswith(".gz"):
                    with gzip.open(raw) as f:
                        yield f
                else:
                    yield raw
        elif self.path.suffix == ".gz":
            with gzip.open(self.path, "rb") as f:
                yield f
        else:
            with open(self.path, "rb") as f:
                yield f


def offline() -> bool:
    """True when ``$RECSYS_OFFLINE`` forbids downloads (any value but '', '0', 'false', 'no')."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def data_home() -> Path | None:
    value = os.environ.get(ENV_HOME, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir(name: str) -> Path:
    root = os.environ.get(ENV_CACHE, "").strip()
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "recsys") / name




def fetch(url: str, dest: Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically; DataError (and no file) if the digest differs.

    Network failures raise OSError (``urllib.error.URLError`` is one) for the caller to report.
    """
    log.warning("downloading %s -> %s", url, dest)
    h = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if sha256 is not None and h.hexdigest() != sha256:
            raise DataError(f"download of {url} has sha256 {h.hexdigest()}, expected {sha256}; "
                            "the file was discarded. Retry, or fetch it by hand and check it.")
    if sha256 is None:
        log.warning("%s has no pinned sha256; not verified (its sha256 is %s)", url, h.hexdigest())
    return dest


def extract(archive: Path, member: str, dest: Path) -> Path:
    """Copy one zip member to ``dest`` atomically (only that member: no path from the zip is used)."""
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, atomic_path(dest) as tmp:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive}: member {member} is corrupt ({err}); delete the archive and retry") from None
    return dest


def _variants(name: str) -> tuple[str, ...]:
    """File names that stand for registry name ``name``: itself and, for plain files, ``name.gz``."""
    plain = not name.endswith((".zip", ".gz")) and "." in name
    return (name, name + ".gz") if plain else (name,)


def _zip_member(archive: Path, info: DatasetInfo) -> Source:
    """The archive member matching the most preferred non-zip registry file."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/")]
    except zipfile.BadZipFile as err:
        raise DataError(f"{info.name}: {archive} is not a readable zip archive ({err})") from None
    for name in (f for f in info.files if not f.endswith(".zip")):
        for variant in _variants(name):
            for member in members:
                if member.rsplit("/", 1)[-1] == variant:
                    return Source(archive, name, member)
    wanted = [f for f in info.files if not f.endswith(".zip")]
    raise DataError(f"{info.name}: {archive} holds none of {wanted}; its members are {members[:20]}")


def _find_in(folder: Path, info: DatasetInfo) -> Source | None:
    """The most preferred accepted file of ``info`` in ``folder``, or None."""
    for name in info.files:
        for variant in _variants(name):
            path = folder / variant
            if path.exists():
                return _zip_member(path, info) if variant.endswith(".zip") else Source(path, name)
    return None


def _candidates(info: DatasetInfo, data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """(why, folder) pairs in search order."""
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        return [("data_dir", base)] + [(f"data_dir/{f}", base / f) for f in info.folders]
    out = []
    home = data_home()
    if home is not None:
        out += [(f"${ENV_HOME}/{f}", home / f) for f in info.folders] + [(f"${ENV_HOME}", home)]
    out.append(("cache", cache_dir(info.name)))
    if info.embedded:
        out.append(("embedded copy", EMBEDDED_DIR))
    return out


def _download(info: DatasetInfo) -> Source:
    """Fetch the zip at ``info.url`` into the cache and extract the file the loaders read.

    The archive stays in the cache next to the extracted file, so it is never fetched twice.
    """
    folder = cache_dir(info.name)
    archive = fetch(info.url, folder / info.url.rsplit("/", 1)[-1], info.sha256)
    inner = _zip_member(archive, info)
    target = folder / inner.member.rsplit("/", 1)[-1]
    extract(archive, inner.member, target)
    return Source(target, inner.name)


def locate(info: DatasetInfo, data_dir: str | os.PathLike | None = None, download: bool = True) -> Source:
    """Find (or download) the file ``info``'s loader reads; DataError listing what was tried."""
    tried = _candidates(info, data_dir)
    for _, folder in tried:
        if folder.is_dir():
            found = _find_in(folder, info)
            if found is not None:
                return found
    if data_dir is not None:
        note = "data_dir was given, so no other place was searched and nothing was downloaded."
    elif info.url is None:
        note = "There is no public download URL for this dataset."
    elif not download:
        note = f"Download skipped (download=False); it would fetch {info.url}."
    elif offline():
        note = f"Download skipped (${ENV_OFFLINE} is set); it would fetch {info.url}."
    else:
        try:
            return _download(info)
        except OSError as err:
            note = f"Download of {info.url} failed: {err}"
    raise DataError(_not_found(info, tried, note))


def _not_found(info: DatasetInfo, tried: list[tuple[str, Path]], note: str) -> str:
    names = ", ".join(" or ".join(_variants(f)) for f in info.files)
    if not any(why.startswith(("data_dir", "$")) for why, _ in tried):
        note = f"${ENV_HOME} is not set (it names the folder holding the datasets' folders).\n{note}"
    where = "\n".join(f"  {folder}  ({why}{'' if folder.is_dir() else ', no such folder'})"
                      for why, folder in tried)
    return (f"{info.name}: none of its files was found.\nLooked in:\n{where}\n"
            f"Expected one of: {names}\nFormat: {info.format}\nHow to get it: {info.how_to_get}\n{note}")
