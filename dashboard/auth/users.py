"""The users file for `password` mode: one `name:argon2-hash` per line, mode 0600, in a
folder created 0700 (by default a per-user config path: see `default_users_file`).

Managed with `dashboard user add|remove|list`; read on every login so changes apply
without a restart.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_hasher = PasswordHasher()
# verifying an unknown user still costs one hash, so timing does not reveal who exists
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class UsersFileError(ValueError):
    pass


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UsersFileError(
            f"user name {name!r} must be 1-64 characters of letters, digits, . _ @ -"
        )
    return name


def load(path: Path) -> dict[str, str]:
    users: dict[str, str] = {}
    if not path.exists():
        return users
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not hashed.startswith("$argon2"):
            raise UsersFileError(f"{path}:{n}: expected name:$argon2... hash")
        users[name] = hashed
    return users


def save(path: Path, users: dict[str, str]) -> None:
    if not path.parent.is_dir():
        # parents as usual; the file's own folder private (an existing one is left as is)
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".users-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("# dashboard users: name:argon2 hash (managed by `dashboard user`)\n")
            for name in sorted(users):
                fh.write(f"{name}:{users[name]}\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add(path: Path, name: str, password: str) -> bool:
    """Add or replace a user. Returns True when the user is new."""
    validate_name(name)
    if len(password) < 12:
        raise UsersFileError("password must be at least 12 characters")
    users = load(path)
    new = name not in users
    users[name] = _hasher.hash(password)
    save(path, users)
    return new


def remove(path: Path, name: str) -> None:
    users = load(path)
    if name not in users:
        raise UsersFileError(f"no user {name!r} in {path}")
    del users[name]
    save(path, users)


def verify(path: Path, name: str, password: str) -> bool:
    try:
        users = load(path)
    except UsersFileError:
        return False
    hashed = users.get(name)
    try:
        _hasher.verify(hashed or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return hashed is not None
