"""synthaug.files: atomic writes with the modes a plain open() gives, damaged JSON named, one writer per folder."""

from __future__ import annotations

import os
import stat

import pytest

from synthaug.core.errors import UserError
from synthaug.storage.files import FolderLock, atomic_write_json, read_json


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_and_folders_honour_the_umask(tmp_path, umask):
    import importlib

    import synthaug.storage.files as files_module

    old = os.umask(umask)
    try:
        files = importlib.reload(files_module)  # the umask is read once, at import
        files.atomic_write_text(tmp_path / "a.txt", "x")
        folder = files.temp_dir_beside(tmp_path / "model")
        (folder / "w.bin").write_bytes(b"1")
        files.replace_dir(folder, tmp_path / "model")
        assert mode(tmp_path / "a.txt") == 0o666 & ~umask
        assert mode(tmp_path / "model") == 0o777 & ~umask
    finally:
        os.umask(old)
        importlib.reload(files_module)


def test_damaged_json_is_named(tmp_path):
    atomic_write_json(tmp_path / "ok.json", {"a": 1})
    assert read_json(tmp_path / "ok.json", "state") == {"a": 1}
    (tmp_path / "cut.json").write_text('{"a": ')
    with pytest.raises(UserError, match="cut.json: damaged manifest.json"):
        read_json(tmp_path / "cut.json", "manifest.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a JSON object"):
        read_json(tmp_path / "list.json", "state")
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "none.json", "state")


def test_one_writer_per_folder(tmp_path):
    with FolderLock(tmp_path / "f", "generate") as held:
        assert f"PID {os.getpid()}, synthaug generate" in held.holder()
        with pytest.raises(UserError, match=f"in use by another synthaug process \\(PID {os.getpid()}, synthaug generate\\).*--wait"):
            FolderLock(tmp_path / "f", "audit").check_free()
        with pytest.raises(UserError, match="in use"):
            with FolderLock(tmp_path / "f", "audit"):
                pass
    FolderLock(tmp_path / "f", "audit").check_free()  # released: free again
    with FolderLock(tmp_path / "f", "audit"):
        pass
    assert (tmp_path / "f" / ".synthaug.lock").read_text() == ""
