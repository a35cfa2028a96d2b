"""kidwhisper.files: output directories checked up front, atomic writes, a full disk as one clear error."""

from __future__ import annotations

import errno
import os

import pytest

from kidwhisper.config import DiskFullError, OutputError
from kidwhisper.files import (
    append_text,
    atomic_write_text,
    check_output_dir,
    output_error,
    sha256_file,
    write_bytes,
    writing,
)


def test_output_dir_that_is_a_file_or_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(OutputError, match=r"--out .*/f is an existing file; pass a directory path"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(OutputError, match=r"OUTPUT_DIR .*f/a/b: .*/f is a file, so no directory can be made under it"):
        check_output_dir(tmp_path / "f" / "a" / "b", "OUTPUT_DIR")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing is created by the check
    assert check_output_dir(tmp_path) == tmp_path


def test_unwritable_output_dir_is_refused(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root may write anywhere: pretend
    with pytest.raises(OutputError, match=r"is not writable; choose a directory you can write to"):
        check_output_dir(tmp_path / "x")


def test_full_disk_leaves_the_old_file_and_no_temp_file(tmp_path, full_disk):
    target = tmp_path / "summary.json"
    target.write_text("old")
    refused = full_disk(tmp_path)
    with pytest.raises(DiskFullError, match=r"no space left on device writing .*summary.json; free some space"):
        atomic_write_text(target, "new")
    assert refused and refused[0].name.endswith(".tmp")  # it did write (half of) a temp file
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_append_is_cut_back_when_the_disk_fills(tmp_path, full_disk):
    log = tmp_path / "log.jsonl"
    append_text(log, '{"step": 1}\n')
    full_disk(tmp_path)
    with pytest.raises(DiskFullError, match="log.jsonl"):
        append_text(log, '{"step": 2, "loss": 0.5}\n')
    assert log.read_text() == '{"step": 1}\n'  # no half line


def test_errors_are_translated_by_errno_or_message(tmp_path):
    assert isinstance(output_error(OSError(errno.ENOSPC, "No space"), "p"), DiskFullError)
    assert isinstance(output_error(OSError(errno.EDQUOT, "Quota"), "p"), DiskFullError)
    safetensors_like = Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                 '"No space left on device" })')
    assert isinstance(output_error(safetensors_like, "p"), DiskFullError)
    denied = output_error(PermissionError(errno.EACCES, "Permission denied"), tmp_path / "x")
    assert type(denied) is OutputError and "cannot write there (Permission denied)" in str(denied)
    assert output_error(ValueError("a bug"), "p") is None
    with pytest.raises(ValueError, match="a bug"), writing(tmp_path / "x"):
        raise ValueError("a bug")  # anything else passes unchanged
    tmp = tmp_path / ".d.tmp"
    tmp.mkdir()
    with pytest.raises(DiskFullError, match=r"\.d\.tmp"), writing(tmp, cleanup=tmp):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not tmp.exists()


def test_sha256_of_a_file(tmp_path):
    write_bytes(tmp_path / "a", b"abc")
    assert sha256_file(tmp_path / "a") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_written_files_and_dirs_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    import os
    import stat

    from kidwhisper.files import atomic_write_bytes, current_umask, replacing_dir, temp_dir

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_text(tmp_path / "new.json", "{}")
        (tmp_path / "old.json").write_text("old")
        os.chmod(tmp_path / "old.json", 0o600)
        atomic_write_bytes(tmp_path / "old.json", b"new", fsync=False)  # a replaced file: the new file's mode
        write_bytes(tmp_path / "plain.bin", b"x")
        append_text(tmp_path / "log.jsonl", "{}\n")
        with replacing_dir(tmp_path / "export") as work:
            assert stat.S_IMODE(work.stat().st_mode) == 0o700 and work.name.endswith(".tmp")  # private meanwhile
            write_bytes(work / "model.bin", b"x")
        made = tmp_path / "export"
        assert temp_dir(".scratch.", tmp_path).name.endswith(".tmp")
    finally:
        os.umask(old)
    for name in ("new.json", "old.json", "plain.bin", "log.jsonl", "export/model.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == file_mode, name
    assert stat.S_IMODE(made.stat().st_mode) == dir_mode


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_replacing_dir_swaps_in_a_complete_directory(tmp_path):
    from kidwhisper.files import replacing_dir

    final = tmp_path / "model"
    with replacing_dir(final) as tmp:
        assert tmp.parent == tmp_path and not final.exists()
        write_bytes(tmp / "a.bin", b"first")
    assert _tree(final) == {"a.bin": b"first"}
    with replacing_dir(final) as tmp:
        write_bytes(tmp / "b.bin", b"second")
        assert _tree(final) == {"a.bin": b"first"}  # the previous one stays until the new one is complete
    assert _tree(final) == {"b.bin": b"second"}  # replaced whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp or old directory left


@pytest.mark.parametrize("failure", ["bug", "full disk", "rename"])
def test_a_failure_mid_write_keeps_the_previous_dir_and_leaves_no_temp_dir(tmp_path, full_disk, monkeypatch, failure):
    import os

    from kidwhisper import files
    from kidwhisper.files import replacing_dir

    final = tmp_path / "model"
    with replacing_dir(final) as tmp:
        write_bytes(tmp / "weights.bin", b"previous")
        write_bytes(tmp / "config.json", b"{}")
    before = _tree(final)
    if failure == "full disk":
        full_disk(tmp_path, when=lambda p: p.name == "config.json")
        expected = pytest.raises(DiskFullError, match=r"no space left on device writing .*model")
    elif failure == "rename":  # the new directory cannot take the final name (after the old one moved aside)
        real = os.replace

        def replace(src, dst):
            if str(src).endswith(".tmp"):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            return real(src, dst)

        monkeypatch.setattr(files.os, "replace", replace)
        expected = pytest.raises(OSError, match="cross-device")
    else:
        expected = pytest.raises(ValueError, match="a bug")
    with expected, replacing_dir(final) as tmp:
        write_bytes(tmp / "weights.bin", b"half of the new weights")
        if failure == "bug":
            raise ValueError("a bug")
        write_bytes(tmp / "config.json", b'{"new": 1}')
    monkeypatch.undo()
    assert _tree(final) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_restore_dir_puts_back_what_a_kill_between_the_renames_left(tmp_path):
    from kidwhisper.files import replacing_dir, restore_dir

    final = tmp_path / "adapter"
    with replacing_dir(final) as tmp:
        write_bytes(tmp / "adapter.safetensors", b"best")
    os.replace(final, tmp_path / ".adapter.old")  # killed after moving the old one aside ...
    (tmp_path / ".adapter.k1ll3d.tmp").mkdir()  # ... with the new one still a temp dir
    restore_dir(final)
    assert _tree(final) == {"adapter.safetensors": b"best"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    restore_dir(final)  # nothing to do
    assert _tree(final) == {"adapter.safetensors": b"best"}
