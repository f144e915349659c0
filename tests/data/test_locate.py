"""Where the cache lives: the user's cache directory, never the package's source tree."""

from pathlib import Path

from mara_bench.data import locate


def test_cache_dir_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("MARA_BENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert locate.cache_dir() == tmp_path / "xdg" / "mara_bench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert locate.cache_dir() == tmp_path / "home" / ".cache" / "mara_bench"
    assert locate.REPO_ROOT not in locate.cache_dir().parents
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec ignores relative paths
    assert locate.cache_dir() == tmp_path / "home" / ".cache" / "mara_bench"
    monkeypatch.setenv("MARA_BENCH_CACHE", str(tmp_path / "mine"))
    assert locate.cache_dir() == tmp_path / "mine" and locate.download_dir() == Path(tmp_path / "mine" / "data")
