"""kidwhisper.files: output directories checked up front, atomic writes, a full disk as one clear error."""

from __future__ import annotations

import errno

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

    from kidwhisper.files import atomic_write_bytes, current_umask, temp_dir

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_text(tmp_path / "new.json", "{}")
        (tmp_path / "old.json").write_text("old")
        os.chmod(tmp_path / "old.json", 0o600)
        atomic_write_bytes(tmp_path / "old.json", b"new", fsync=False)  # a replaced file: the new file's mode
        write_bytes(tmp_path / "plain.bin", b"x")
        append_text(tmp_path / "log.jsonl", "{}\n")
        made = temp_dir(".export.", tmp_path)
    finally:
        os.umask(old)
    for name in ("new.json", "old.json", "plain.bin", "log.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == file_mode, name
    assert stat.S_IMODE(made.stat().st_mode) == dir_mode and made.name.endswith(".tmp")
