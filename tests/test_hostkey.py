"""The worker host's key (workers.hostkey): created once, private, outside the cache folder; the
digest cache's rows hold only under the key that signed them."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from fleet.errors import BadInput
from fleet.settings import Settings
from workers import hostkey, integrity


def test_key_is_created_once_private_and_outside_the_cache(tmp_path: Path) -> None:
    settings = Settings.from_env({"FLEET_CACHE_DIR": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert settings.host_key == tmp_path / "cfg" / "model-fleet" / "host.key"
    key = hostkey.load(settings)
    assert key is not None and len(key) == hostkey.KEY_BYTES
    assert stat.S_IMODE(settings.host_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.host_key.parent.stat().st_mode) == 0o700
    assert hostkey.load(settings) == key  # read back, not made again
    assert not (tmp_path / "cache").exists()
    assert sorted(p.name for p in settings.host_key.parent.iterdir()) == ["host.key"]  # no temporary left


def _load_in_child(path: str, cache: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    key = hostkey.read_or_create(Path(path), Path(cache))
    out.put(key.hex())


def test_workers_creating_the_key_at_once_share_one(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    path = tmp_path / "k" / "host.key"
    procs = [ctx.Process(target=_load_in_child, args=(str(path), str(tmp_path / "c"), out)) for _ in range(6)]
    for p in procs:
        p.start()
    keys = {out.get(timeout=30) for _ in procs}
    for p in procs:
        p.join(30)
    assert keys == {path.read_text().strip()}


def test_host_key_inside_the_cache_folder_is_refused(tmp_path: Path) -> None:
    env = {"FLEET_CACHE_DIR": str(tmp_path / "cache"), "FLEET_HOST_KEY": str(tmp_path / "cache" / "keys" / "k")}
    with pytest.raises(BadInput, match=r"\$FLEET_HOST_KEY .* lies inside the cache folder"):
        Settings.from_env(env)
    # reached through a link: not refused by name, but never used either
    (tmp_path / "cache").mkdir()
    os.symlink(tmp_path / "cache", tmp_path / "elsewhere")
    env["FLEET_HOST_KEY"] = str(tmp_path / "elsewhere" / "k")
    settings = Settings.from_env(env)
    assert hostkey.load(settings) is None and not (tmp_path / "cache" / "k").exists()


def test_rotating_the_key_turns_every_row_into_a_miss(tmp_path: Path) -> None:
    settings = Settings.from_env({"FLEET_CACHE_DIR": str(tmp_path / "cache"), "FLEET_HOST_KEY": str(tmp_path / "k")})
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\x00" * 1000)
    sha = integrity.file_sha256(f, integrity.DigestCache.for_host(settings))
    real, key = os.path.realpath(f), integrity.stat_key(f)
    assert integrity.DigestCache.for_host(settings).get(key, real) == sha  # a hit under the same key
    assert integrity.DigestCache(settings.cache_dir / "digests.sqlite").get(key, real) is None  # no key: no hit
    settings.host_key.unlink()  # rotation: delete it, the next use makes a new one
    assert integrity.DigestCache.for_host(settings).get(key, real) is None
    assert integrity.file_sha256(f, integrity.DigestCache.for_host(settings)) == sha


def test_a_signature_is_bound_to_its_purpose_and_payload() -> None:
    key = b"\x02" * 32
    mac = hostkey.sign(key, hostkey.DIGEST_ROW, ["/a", [1, 2, 3, 4, 5], "00" * 32])
    assert hostkey.valid(key, hostkey.DIGEST_ROW, ["/a", [1, 2, 3, 4, 5], "00" * 32], mac)
    assert not hostkey.valid(key, hostkey.PROVENANCE, ["/a", [1, 2, 3, 4, 5], "00" * 32], mac)
    assert not hostkey.valid(key, hostkey.DIGEST_ROW, ["/b", [1, 2, 3, 4, 5], "00" * 32], mac)
    assert not hostkey.valid(None, hostkey.DIGEST_ROW, ["/a", [1, 2, 3, 4, 5], "00" * 32], mac)
    assert not hostkey.valid(key, hostkey.DIGEST_ROW, ["/a", [1, 2, 3, 4, 5], "00" * 32], None)
