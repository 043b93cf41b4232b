"""Atomic writes: all or nothing, and published with the umask's permissions."""

from __future__ import annotations

import os
import stat

import pytest

from recsys.io import atomic_dir, atomic_path, sha256_dir, sha256_file, write_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_path_publishes_on_success_only(tmp_path):
    target = tmp_path / "a" / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and list(target.parent.iterdir()) == []
    write_json(target, {"b": 1, "a": 2})
    assert target.read_text().startswith('{\n  "a": 2')


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib

        import recsys.io as io_module

        importlib.reload(io_module)
        io_module.write_json(tmp_path / "f.json", {})
        with io_module.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x.npy").write_bytes(b"1")
            (tmp / "sub").mkdir()
        assert _mode(tmp_path / "f.json") == 0o644
        assert _mode(tmp_path / "d") == 0o755 and _mode(tmp_path / "d" / "sub") == 0o755
        assert _mode(tmp_path / "d" / "x.npy") == 0o644
    finally:
        os.umask(old)
        importlib.reload(io_module)


def test_atomic_dir_replaces_whole_and_digests(tmp_path):
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "old.txt").write_text("x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "new.txt").write_text("y")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new.txt"]
    first = sha256_dir(tmp_path / "d")
    (tmp_path / "d" / "new.txt").write_text("z")
    assert sha256_dir(tmp_path / "d") != first
    assert sha256_file(tmp_path / "d" / "new.txt") == \
        "594e519ae499312b29433b7dd8a97ff068defcba9755b6d5d00e84c524d67b06"  # sha256("z")


def test_a_full_disk_while_writing_leaves_no_partial_file_and_names_the_path(tmp_path):
    import errno

    from recsys.io import OutputError

    target = tmp_path / "run" / "result.json"
    with pytest.raises(OutputError) as err:
        with atomic_path(target) as tmp:
            tmp.write_text("half of it")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(target) in str(err.value) and "No space left on device" in str(err.value)
    assert list(target.parent.iterdir()) == []  # neither the file nor its temporary sibling


def test_a_corrupt_model_file_is_detected_by_its_checksum(tmp_path):
    import scipy.sparse as sp

    from recsys.errors import DataError
    from recsys.models.registry import build

    X = sp.random(40, 20, density=0.3, format="csr", random_state=0, dtype="float32")
    X.data[:] = 1
    path = build("ease", lam=10.0).fit(X).save(tmp_path / "model.pt")
    assert (tmp_path / "model.pt.sha256").read_text().strip() == sha256_file(path)
    from recsys.models.base import Model

    Model.load(path)  # intact: loads
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the stored weights
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch for .*model.pt"):
        Model.load(path)
