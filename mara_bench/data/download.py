"""Downloads into the cache (``<cache>/data``, laid out like shared/datasets): fetch, verify sha256, extract.

Every write is atomic: a file is streamed to a temporary name next to its destination, its sha256 checked
against the manifest, and only then renamed; on any failure the temporary file is deleted, so the cache
never holds a partial or unverified entry. Files whose source publishes no checksum (manifest ``sha256``
null) are accepted with a warning that prints the sha256 they had.

Command line: ``python -m mara_bench.data.download rmd17:aspirin [3bpa ...]`` (add ``--split K``).
Loading a dataset downloads missing files automatically only when ``MARA_BENCH_DOWNLOAD=1``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path

from ..errors import UserError
from .locate import download_dir, find_file, load_manifest

CHUNK = 1 << 16


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _tmp_next_to(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    return Path(tmp)


def _stream(url: str, out: Path, progress: bool, timeout: float = 60.0) -> str:
    """Copy ``url`` into ``out``; return the sha256 of the bytes."""
    from tqdm import tqdm

    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(out, "wb") as fh:
            total = resp.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, disable=not progress,
                      desc=url.rsplit("/", 1)[-1][:40], file=sys.stderr, leave=False) as bar:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    fh.write(block)
                    h.update(block)
                    bar.update(len(block))
    except OSError as exc:  # URLError, HTTPError, timeouts are OSErrors
        raise UserError(f"download failed: {url} ({type(exc).__name__}: {str(exc)[:80]}); check the network or "
                        "copy the file into the data directory (MARA_BENCH_DATA)") from None
    return h.hexdigest()


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    """Write one member (matched by full name or basename) of a zip/tar archive atomically to ``dest``."""
    tmp = _tmp_next_to(dest)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if n == member or n.rsplit("/", 1)[-1] == member]
                if not names:
                    raise UserError(f"{archive}: archive has no member '{member}'")
                with zf.open(names[0]) as src, open(tmp, "wb") as fh:
                    shutil.copyfileobj(src, fh, CHUNK)
        else:
            with tarfile.open(archive, "r:*") as tf:
                infos = [i for i in tf.getmembers() if i.isfile() and (i.name == member or
                                                                      i.name.rsplit("/", 1)[-1] == member)]
                if not infos:
                    raise UserError(f"{archive}: archive has no member '{member}'")
                with tf.extractfile(infos[0]) as src, open(tmp, "wb") as fh:
                    shutil.copyfileobj(src, fh, CHUNK)
        os.replace(tmp, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UserError(f"{archive}: cannot extract '{member}' ({type(exc).__name__}: {exc}); "
                        "the archive is corrupt, download it again") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def extract_archive(archive, dest_dir, strip: str = "") -> list[Path]:
    """Extract every regular file of a tar/zip archive into ``dest_dir`` (each file atomically; names starting
    with ``strip`` lose that prefix). Refuses absolute names and '..'."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    else:
        try:
            with tarfile.open(archive, "r:*") as tf:
                names = [i.name for i in tf.getmembers() if i.isfile()]
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise UserError(f"{archive}: not a readable tar/zip archive ({type(exc).__name__}); download it again") \
                from None
    out = []
    for name in names:
        rel = name[len(strip):] if strip and name.startswith(strip) else name
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise UserError(f"{archive}: unsafe member name '{name}'; refusing to extract")
        _extract_member(archive, name, dest_dir / rel)
        out.append(dest_dir / rel)
    return out


def fetch_url(url: str, dest, sha256: str | None = None, extract: dict | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically and verify ``sha256`` (of the downloaded bytes).

    With ``extract={"member": name}`` the download is an archive and only that member is written to ``dest``.
    """
    dest = Path(dest)
    tmp = _tmp_next_to(dest)
    try:
        got = _stream(url, tmp, progress)
        if sha256 and got != sha256.lower():
            raise UserError(f"sha256 mismatch for {dest.name} from {url}: expected {sha256}, got {got}; "
                            "the download is corrupt or the source changed; nothing was cached, try again")
        if not sha256:
            warnings.warn(f"{url}: the source publishes no sha256; downloaded file has sha256 {got}", stacklevel=2)
        if extract:
            _extract_member(tmp, extract["member"], dest)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def ensure_file(family: str, relpath: str, data_dir=None, progress: bool = True) -> Path:
    """The local path of a manifest file, downloading it into the cache if it is nowhere yet."""
    found = find_file(relpath, data_dir)
    if found is not None:
        return found
    entry = load_manifest(family)["files"].get(relpath)
    if entry is None or not entry.get("url"):
        raise UserError(f"{relpath}: no download location known for dataset family '{family}'; "
                        "copy the file into the data directory (MARA_BENCH_DATA)")
    return fetch_url(entry["url"], download_dir() / relpath, entry.get("sha256"), entry.get("extract"), progress)


def fetch(family: str, member: str | None = None, split: int | None = None, data_dir=None,
          progress: bool = True) -> list[Path]:
    """Download every file that ``family:member`` needs (all splits unless ``split`` is given) into the cache."""
    from ..registry import get_dataset_family

    fam = get_dataset_family(family)()
    if not getattr(fam, "manifest", {}).get("files"):
        raise UserError(f"dataset family '{family}' has nothing to download")
    rels = fam.download_files(member, split, data_dir)
    return [ensure_file(fam.name, rel, data_dir, progress) for rel in rels]


def fetch_archive(family: str, progress: bool = True, url: str | None = None) -> list[Path]:
    """Download the family's whole-release archive (manifest ``archive``; rMD17: figshare ``rmd17.tar.bz2``)
    and extract every file into the cache (the archive's own top folder, e.g. ``rmd17/``, is kept)."""
    entry = load_manifest(family).get("archive")
    if not entry:
        raise UserError(f"dataset family '{family}' has no release archive; use fetch('{family}', member)")
    dest = download_dir()
    tmp = _tmp_next_to(dest / f"{entry['name']}")
    try:
        got = _stream(url or entry["url"], tmp, progress)
        if entry.get("sha256") and got != entry["sha256"]:
            raise UserError(f"sha256 mismatch for {entry['name']}: expected {entry['sha256']}, got {got}; "
                            "nothing was cached, try again")
        if not entry.get("sha256"):
            warnings.warn(f"{entry['name']}: the source publishes no sha256; downloaded archive has sha256 {got}",
                          stacklevel=2)
        return extract_archive(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m mara_bench.data.download", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="+", help="dataset names, e.g. rmd17:aspirin 3bpa acac md22:AT-AT")
    p.add_argument("--split", type=int, default=None, help="only this split (rmd17: 1..5)")
    p.add_argument("--archive", action="store_true",
                   help="download the family's whole release archive instead (rmd17: figshare rmd17.tar.bz2)")
    args = p.parse_args(argv)
    try:
        if args.archive:
            for name in args.names:
                print(f"{name}: {len(fetch_archive(name.partition(':')[0]))} files extracted into {download_dir()}")
            return 0
        for name in args.names:
            family, _, member = name.partition(":")
            for path in fetch(family, member or None, args.split):
                print(path)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
