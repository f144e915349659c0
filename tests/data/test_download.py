"""Downloads without network: a local HTTP server on 127.0.0.1 serves files; checksum failures leave no cache entry."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mara_bench.data.download import extract_archive, fetch_url, sha256_of
from mara_bench.errors import UserError

DATA = os.environ.get("MARA_BENCH_DATA")


@pytest.fixture
def server(tmp_path):
    """(root folder, base URL) of a quiet HTTP server on 127.0.0.1 serving ``root``."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MARA_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MARA_BENCH_DOWNLOAD", raising=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_fetch_verifies_sha256(server, tmp_path):
    root, url = server
    payload = os.urandom(300_000)
    (root / "blob.bin").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache" / "data" / "fam" / "blob.bin"
    fetch_url(f"{url}/blob.bin", dest, sha256=good, progress=False)
    assert dest.read_bytes() == payload and sha256_of(dest) == good
    assert _leftovers(dest.parent) == ["blob.bin"]  # no temp files left


def test_checksum_failure_leaves_no_partial_entry(server, tmp_path):
    root, url = server
    (root / "blob.bin").write_bytes(b"the source changed")
    dest = tmp_path / "cache" / "data" / "fam" / "blob.bin"
    with pytest.raises(UserError, match=r"sha256 mismatch for blob\.bin .*nothing was cached"):
        fetch_url(f"{url}/blob.bin", dest, sha256="0" * 64, progress=False)
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_http_error_is_user_error(server, tmp_path):
    _, url = server
    dest = tmp_path / "cache" / "x.bin"
    with pytest.raises(UserError, match="download failed: .*missing.bin"):
        fetch_url(f"{url}/missing.bin", dest, sha256=None, progress=False)
    assert _leftovers(dest.parent) == []


def test_archive_member_extraction_tar_bz2_and_zip(server, tmp_path):
    root, url = server
    inner = tmp_path / "inner.npz"
    np.savez(inner, z=np.array([1, 1]), R=np.zeros((2, 2, 3)))
    with tarfile.open(root / "pack.tar.bz2", "w:bz2") as tf:
        tf.add(inner, arcname="rmd17/npz_data/inner.npz")
    with zipfile.ZipFile(root / "pack.zip", "w") as zf:
        zf.write(inner, arcname="inner.npz")
    for name in ("pack.tar.bz2", "pack.zip"):
        sha = sha256_of(root / name)
        dest = tmp_path / "cache" / "data" / name / "inner.npz"
        fetch_url(f"{url}/{name}", dest, sha256=sha, extract={"member": "inner.npz"}, progress=False)
        assert dest.read_bytes() == inner.read_bytes()
        assert _leftovers(dest.parent) == ["inner.npz"]  # the archive itself is not kept
    out = extract_archive(root / "pack.tar.bz2", tmp_path / "all", strip="rmd17/")
    assert out == [tmp_path / "all" / "npz_data" / "inner.npz"] and out[0].read_bytes() == inner.read_bytes()
    (root / "bad.tar.bz2").write_bytes(b"BZh9 definitely not bzip2")
    with pytest.raises(UserError, match="bad.tar.bz2"):
        extract_archive(root / "bad.tar.bz2", tmp_path / "none")


@pytest.mark.skipif(not DATA or not Path(DATA).is_dir(), reason="MARA_BENCH_DATA is not set (serves real files)")
def test_load_downloads_only_when_allowed(server, tmp_path, monkeypatch):
    """3BPA files served from 127.0.0.1 with the manifest's real sha256s; loaded from the cache afterwards."""
    from mara_bench.data import load_dataset
    from mara_bench.data.download import ensure_file
    from mara_bench.data.locate import load_manifest

    root, url = server
    files = load_manifest("3bpa")["files"]
    needed = ["3bpa/train_300K.xyz", "3bpa/iso_atoms.xyz", "3bpa/test_300K.egraffbench_nequip.npz"]
    for k, rel in enumerate(needed):
        (root / f"f{k}").write_bytes((Path(DATA) / rel).read_bytes())
        monkeypatch.setitem(files[rel], "url", f"{url}/f{k}")
    monkeypatch.delenv("MARA_BENCH_DATA")
    with pytest.raises(UserError, match=r"3bpa:300K: 3 file\(s\) not found \(3bpa/train_300K\.xyz, .*MARA_BENCH_DOWNLOAD=1"):
        load_dataset("3bpa")
    assert _leftovers(tmp_path / "cache" / "data") == []
    monkeypatch.setenv("MARA_BENCH_DOWNLOAD", "1")
    ds = load_dataset("3bpa")
    assert [len(ds["train"]), len(ds["test"])] == [450, 1669]
    assert set(ds.meta["missing_test_sets"]) == {"test_600K", "test_1200K", "test_dih"}  # optional: not fetched
    for rel in needed:
        assert sha256_of(tmp_path / "cache" / "data" / rel) == files[rel]["sha256"]
    # a source that changed: wrong bytes -> mismatch, nothing cached
    target = tmp_path / "cache" / "data" / needed[1]
    target.unlink()
    (root / "f1").write_bytes(b"1\n\nH 0 0 0\n")
    with pytest.raises(UserError, match="sha256 mismatch"):
        ensure_file("3bpa", needed[1])
    assert not target.exists() and not [p for p in target.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(not DATA or not Path(DATA).is_dir(), reason="MARA_BENCH_DATA is not set (builds from real files)")
def test_rmd17_release_archive_layout(server, tmp_path, monkeypatch):
    """A figshare-style rmd17.tar.bz2 (full npz + split CSVs) gives exactly the per-split frames."""
    import io

    from mara_bench.data import load_dataset
    from mara_bench.data.download import fetch_archive

    root, url = server
    parts = [np.load(Path(DATA) / "rmd17" / f"rmd17_ethanol_{k}_01.npz") for k in ("train", "test")]
    perm = np.random.default_rng(0).permutation(2000)  # rows of the 'full' file in a shuffled order
    keys = ("coords", "energies", "forces", "old_indices", "old_energies", "old_forces")
    stacked = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    full = {k: np.empty_like(v) for k, v in stacked.items()}
    for k in keys:
        full[k][perm] = stacked[k]
    buf = io.BytesIO()
    np.savez(buf, nuclear_charges=parts[0]["nuclear_charges"], **full)
    with tarfile.open(root / "rmd17.tar.bz2", "w:bz2") as tf:
        for name, data in (("rmd17/npz_data/rmd17_ethanol.npz", buf.getvalue()),
                           ("rmd17/splits/index_train_01.csv", "\n".join(map(str, perm[:1000])).encode()),
                           ("rmd17/splits/index_test_01.csv", "\n".join(map(str, perm[1000:])).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.warns(UserWarning, match="no sha256"):
        files = fetch_archive("rmd17", progress=False, url=f"{url}/rmd17.tar.bz2")
    assert len(files) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    from_archive = load_dataset("rmd17:ethanol", split=1, data_dir=str(empty))
    assert from_archive.meta["files"][0] == "rmd17/npz_data/rmd17_ethanol.npz"
    reference = load_dataset("rmd17:ethanol", split=1)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(from_archive[s].energy, reference[s].energy)
        np.testing.assert_array_equal(from_archive[s].info["old_indices"], reference[s].info["old_indices"])
    np.testing.assert_array_equal(from_archive["test"].info["source_index"], perm[1000:])  # rMD17 row index
