"""Writing outputs safely: output directories checked before any work, atomic writes, and a full disk or
an unwritable directory reported as one line that names the file.

Every file kidwhisper writes itself goes through :func:`_write` (open, write, optionally fsync), called
by :func:`write_bytes` (into a temp directory that is renamed later), :func:`atomic_write_bytes` /
:func:`atomic_write_text` (temp file + rename in the same directory), :class:`AppendThenRename` (the same,
for a file written piece by piece) or :func:`append_text`. Files written
by other libraries (``save_pretrained``, the CTranslate2 converter) are wrapped in :func:`writing`, which
translates their errors the same way. On failure no ``.tmp`` file is left behind: a temp file is removed,
and a temp directory is removed by the code that made it.

Whole directories (a converted model, an export, the best weights of a run) are written with
:func:`replacing_dir`: into a new temp directory next to the target, renamed into place when complete.

Files and directories get the permissions any other tool gives them under the process umask (0644 and 0755
under the usual 022). :mod:`tempfile` creates them private (0600 / 0700): a temp file gets the umask's mode
as soon as it is made, a temp directory stays private while it is written and gets it just before it is
renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kidwhisper.config import DiskFullError, OutputError

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
# Libraries that do not raise OSError still say so in their message (safetensors: "os error 28").
NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


def output_error(e: BaseException, path: str | Path) -> OutputError | None:
    """The OutputError (DiskFullError for a full disk or quota) that ``e``, raised while writing ``path``,
    means; None when ``e`` is something else (a bug, to be shown as it is)."""
    code = getattr(e, "errno", None)
    if code in NO_SPACE or (not isinstance(e, OSError) and any(t in str(e) for t in NO_SPACE_TEXT)):
        return DiskFullError(f"no space left on device writing {path}; free some space on that disk (or write "
                             f"to another directory) and run again")
    if code in NOT_WRITABLE:
        return OutputError(f"{path}: cannot write there ({os.strerror(code)}); choose a directory you can "
                           f"write to or fix its permissions")
    if code in (errno.ENOTDIR, errno.EEXIST) and isinstance(e, OSError):
        return OutputError(f"{path}: a file is in the way of a directory ({e.filename or path}); remove it or "
                           f"choose another output directory")
    return None


def current_umask() -> int:
    """The process umask, read from /proc where it is shown (setting it to read it would race with other
    threads creating files), else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_dir(prefix: str, dir: str | Path, suffix: str = ".tmp") -> Path:
    """A new private (0700) temp directory in ``dir``, to be renamed into place when complete
    (:func:`replacing_dir` gives it the umask's mode first)."""
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=dir))


def _old_dir(final: Path) -> Path:
    """Where :func:`replacing_dir` keeps the previous ``final`` between its two renames."""
    return final.with_name(f".{final.name}.old")


@contextlib.contextmanager
def replacing_dir(final: str | Path) -> Iterator[Path]:
    """Write directory ``final`` atomically: the block fills the temp directory it is given (next to
    ``final``, from :func:`temp_dir`); when the block completes, the temp directory gets the mode ``mkdir``
    would give it under the umask and is renamed to ``final``, a previous ``final`` being moved aside first
    and deleted once the new one is in place.

    When the block (or a rename) fails, the temp directory is removed and a previous ``final`` stays as it
    was; errors that mean "cannot write" become OutputError / DiskFullError naming ``final``
    (:func:`writing`). A kill between the two renames leaves the previous directory as ``.<name>.old``,
    which :func:`restore_dir` puts back.
    """
    final = Path(final)
    old = _old_dir(final)
    with writing(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(f".{final.name}.", final.parent)
    moved = False
    try:
        with writing(final):
            yield tmp
            os.chmod(tmp, 0o777 & ~current_umask())
            if final.exists():
                if old.exists():
                    _remove(old)  # left by a kill between the renames, and final exists: stale
                os.replace(final, old)
                moved = True
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        if moved and not final.exists():
            os.replace(old, final)
        raise
    if moved:
        _remove(old)


def restore_dir(final: str | Path) -> None:
    """Put back ``final`` from the copy a kill inside :func:`replacing_dir` left between its two renames,
    and remove the temp directories a killed :func:`replacing_dir` left next to it (so call it only where
    no other process is writing ``final``, e.g. in a run directory on resume)."""
    final = Path(final)
    old = _old_dir(final)
    if old.is_dir() and not final.exists():
        os.replace(old, final)
    if final.parent.is_dir():
        for leftover in final.parent.glob(f".{final.name}.*.tmp"):
            _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def writing(path: str | Path, cleanup: str | Path | None = None) -> Iterator[None]:
    """Raise errors of the block that mean "cannot write" as OutputError / DiskFullError naming ``path``
    (others pass unchanged); remove ``cleanup`` (a temp file or directory) when the block fails."""
    try:
        yield
    except BaseException as e:
        if cleanup is not None:
            _remove(Path(cleanup))
        err = None if isinstance(e, OutputError) or not isinstance(e, Exception) else output_error(e, path)
        if err is not None:
            raise err from e
        raise


def _write(path: Path, data: bytes | memoryview, mode: str = "wb", fsync: bool = False) -> None:
    """Put ``data`` in ``path``: the one place kidwhisper writes file contents (tests replace it to
    simulate a full disk)."""
    with open(path, mode) as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def write_bytes(path: str | Path, data: bytes | memoryview, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` in place (for files inside a temp directory that is renamed when complete)."""
    path = Path(path)
    with writing(path):
        _write(path, data, fsync=fsync)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory and an atomic rename: ``path`` is
    either the old file or the complete new one, and the temp file is gone either way."""
    path = Path(path)
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path):
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600; a plain open() would not
    finally:
        os.close(fd)
    with writing(path, cleanup=name):
        _write(Path(name), data, fsync=fsync)
        os.replace(name, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text, synced to disk before the rename."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=True)


class AppendThenRename:
    """A file built by appending text to a temp file beside it and renamed into place by :meth:`commit`
    (synced first): ``path`` holds its old content or the complete new one, never a part. As a context
    manager, the temp file is removed unless it was committed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with writing(self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with writing(self.path):
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o666 & ~current_umask())
        finally:
            os.close(fd)
        self.tmp = Path(name)

    def append(self, text: str) -> None:
        with writing(self.path, cleanup=self.tmp):
            _write(self.tmp, text.encode("utf-8"), mode="ab")

    def commit(self) -> None:
        with writing(self.path, cleanup=self.tmp):
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AppendThenRename:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to ``path`` in one write; when that fails the file is cut back to its old length,
    so a log never ends in half a line."""
    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    try:
        with writing(path):
            _write(path, text.encode("utf-8"), mode="ab")
    except BaseException:
        with contextlib.suppress(OSError):
            os.truncate(path, size)
        raise


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 4 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_output_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` if it is a writable directory or can be created as one; OutputError naming ``flag`` and the
    fix otherwise. Nothing is created: this runs before any model or data is loaded."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"{flag} {path} is an existing file; pass a directory path (it is created if missing)")
    existing = p.absolute()
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{flag} {path}: {existing} is a file, so no directory can be made under it; choose "
                          f"another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: {existing} is not writable; choose a directory you can write to or "
                          f"fix its permissions")
    return p
