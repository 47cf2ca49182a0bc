"""The generated admin token: made at start-up when none is configured, kept in a file
only its user can read, found there by ``wspipe backends|pipes``.

The file is ``admin-PORT.token`` (one line, the token) in the first usable of:

1. ``$XDG_RUNTIME_DIR/wspipe/`` when ``$XDG_RUNTIME_DIR`` is an absolute directory
   owned by the user and writable by no one else (``/run/user/UID`` on systemd hosts);
2. ``$XDG_STATE_HOME/wspipe/``, by default ``~/.local/state/wspipe/``.

Never a shared ``/tmp``. The ``wspipe`` directory is created ``0700``; a directory
that is a symlink or is owned by someone else is refused, and so is a token file
that is a symlink. The file is created ``0600`` under a temporary name and renamed
into place, so no reader ever sees a partial token, and it is removed when the
listener stops (if it still holds that listener's token). Only loopback listeners
get a generated token; the port alone names the file.

Standard library only (the admin CLI imports it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from .errors import AdminConfigError

#: Name of the directory, under the runtime or state directory.
DIRECTORY_NAME = "wspipe"
#: Bytes of randomness in a generated token (``secrets.token_urlsafe``).
TOKEN_BYTES = 32


def generate_token() -> str:
    """A new random admin token (URL-safe text)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_file_name(port: int) -> str:
    """The file name of the generated token of the admin listener on ``port``."""
    return f"admin-{port}.token"


def _private_dir(path: str) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def token_directories(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where a generated token may be, in the order it is looked for (none may exist yet)."""
    environ = os.environ if environ is None else environ
    out = []
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime) and _private_dir(runtime):
        out.append(Path(runtime) / DIRECTORY_NAME)
    state = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        home = environ.get("HOME", "")
        state = os.path.join(home, ".local", "state") if os.path.isabs(home) and home != "/" \
            else ""
    if state:
        out.append(Path(state) / DIRECTORY_NAME)
    return out


def _open_private_dir(path: Path) -> int:
    """An fd of ``path``, which must be a real directory (no symlink) owned by the user;
    group and other permissions are removed if it has any."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise PermissionError(f"{path} is owned by uid {info.st_uid}, not by this user")
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def prepare_token_directory(environ: Mapping[str, str] | None = None) -> Path:
    """The directory a generated token is written to, created ``0700`` if needed.

    :raises AdminConfigError: No usable directory (saying why, and what to do instead).
    """
    candidates = token_directories(environ)
    problems = []
    for directory in candidates:
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
            os.close(_open_private_dir(directory))
        except OSError as exc:
            reason = "it is a symlink" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
            problems.append(f"{directory}: {reason}")
            continue
        return directory
    where = "; ".join(problems) or "no $XDG_RUNTIME_DIR, $XDG_STATE_HOME or $HOME"
    raise AdminConfigError(
        f"cannot keep a generated admin token ({where}); set an absolute $XDG_RUNTIME_DIR "
        "or $HOME, or give the token yourself (--admin-token-file or $WSPIPE_ADMIN_TOKEN)")


def write_token_file(directory: Path, port: int, token: str) -> Path:
    """Write ``token`` to ``directory/admin-PORT.token``, mode ``0600``; its path.

    :raises OSError: The directory is not the user's own, the file is a symlink, or
        the write failed.
    """
    name = token_file_name(port)
    dir_fd = _open_private_dir(directory)
    try:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
                raise PermissionError(f"{directory / name} is a symlink: refusing to "
                                      "replace it")
        temporary = f".{name}.{secrets.token_hex(8)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, f"{token}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return directory / name


def read_token_file(path: Path) -> str | None:
    """The token in ``path`` (first line), or ``None`` if there is no such file.

    :raises OSError: A symlink, not a regular file of this user, or unreadable.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise PermissionError(f"{path} is not a regular file of this user")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    token = data.decode("utf-8", "replace").partition("\n")[0].strip()
    return token or None


def remove_token_file(path: Path, token: str) -> None:
    """Remove ``path`` if it still holds ``token`` (another listener may have replaced it)."""
    with contextlib.suppress(OSError):
        if read_token_file(path) == token:
            path.unlink()


def find_token(port: int, environ: Mapping[str, str] | None = None
               ) -> tuple[str | None, list[Path]]:
    """The generated token of the loopback admin listener on ``port``, and where it was
    looked for. Unreadable or unsafe files are skipped."""
    searched = []
    for directory in token_directories(environ):
        path = directory / token_file_name(port)
        searched.append(path)
        try:
            token = read_token_file(path)
        except OSError:
            continue
        if token:
            return token, searched
    return None, searched
