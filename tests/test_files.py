"""synthaug.files: atomic writes with the modes a plain open() gives, damaged JSON named, one writer per folder."""

from __future__ import annotations

import os
import stat
import time

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


class Killed(BaseException):
    """Stands for a kill -9: nothing after it runs."""


def test_a_kill_inside_replace_dir_is_recovered_by_the_next_call_or_clean_up(tmp_path, monkeypatch):
    import synthaug.storage.files as files_module

    target = tmp_path / "models" / "all"

    def filled(text: str):
        folder = files_module.temp_dir_beside(target)
        (folder / "w.bin").write_text(text)
        return folder

    def kill_at(function: str, call: int):
        real, calls = getattr(files_module.os if function == "replace" else files_module.shutil, function), []

        def killed(*args, **kwargs):
            calls.append(1)
            if len(calls) == call:
                raise Killed
            return real(*args, **kwargs)

        monkeypatch.setattr(files_module.os if function == "replace" else files_module.shutil, function, killed)

    def entries() -> list[str]:
        return sorted(p.name for p in target.parent.iterdir())

    files_module.replace_dir(filled("first"), target)
    for recover in ("clean-up", "next call"):
        kill_at("replace", 2)  # between the two renames: the old version moved aside, the new one not yet in place
        with pytest.raises(Killed):
            files_module.replace_dir(filled("second"), target)
        monkeypatch.undo()
        assert not target.exists() and ".all.old" in entries()
        if recover == "clean-up":  # what fit runs under its lock before any work: the old version comes back
            files_module.remove_stale_temps(target.parent)
            assert entries() == ["all"] and (target / "w.bin").read_text() == "first"
        else:
            files_module.replace_dir(filled("third"), target)
            files_module.remove_stale_temps(target.parent)
            assert entries() == ["all"] and (target / "w.bin").read_text() == "third"
    kill_at("rmtree", 1)  # after both renames, before the old version is deleted: the new one stands
    with pytest.raises(Killed):
        files_module.replace_dir(filled("fourth"), target)
    monkeypatch.undo()
    files_module.remove_stale_temps(target.parent)
    assert entries() == ["all"] and (target / "w.bin").read_text() == "fourth"


def test_a_lock_that_made_its_folder_removes_it_when_nothing_else_came_in(tmp_path):
    import threading

    with FolderLock(tmp_path / "run", "fit", remove_unused=True):
        pass
    assert not (tmp_path / "run").exists()  # a command that failed before writing anything leaves no folder
    with FolderLock(tmp_path / "run", "fit", remove_unused=True):
        (tmp_path / "run" / "recipe.yaml").write_text("work")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".synthaug.lock", "recipe.yaml"]  # work stays
    (tmp_path / "old").mkdir()
    with FolderLock(tmp_path / "old", "fit", remove_unused=True):
        pass
    assert (tmp_path / "old").is_dir()  # a folder it did not make stays, empty or not

    # a process queued on the lock file that the holder removes takes the lock of a new file, not of the removed one
    taken, release = threading.Event(), threading.Event()

    def queued():
        with FolderLock(tmp_path / "new", "fit", wait=True):
            taken.set()
            release.wait(10)

    with FolderLock(tmp_path / "new", "fit", remove_unused=True):
        waiter = threading.Thread(target=queued)
        waiter.start()
        time.sleep(0.3)
        assert not taken.is_set()
    assert taken.wait(10)
    with pytest.raises(UserError, match="in use by another synthaug process"):
        FolderLock(tmp_path / "new", "audit").check_free()  # the queued one holds the lock file now in the folder
    release.set()
    waiter.join(10)
