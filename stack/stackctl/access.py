"""Let a service user reach a cache inside a private home directory, and nothing more.

Elasticsearch must not run as root, but the cache usually lives under root's home (mode 700).
Rather than open that directory to everyone, each ancestor the user cannot search gets one
POSIX ACL entry, ``user:<name>:--x`` (search only: no listing, no reading). The ACL is written as
the kernel's ``system.posix_acl_access`` attribute, so no ``setfacl`` package is needed.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

_XATTR = "system.posix_acl_access"
_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_SEARCH = 0o1


def _entries_from_mode(mode: int) -> list[tuple[int, int, int]]:
    return [(_USER_OBJ, (mode >> 6) & 7, _NO_ID), (_GROUP_OBJ, (mode >> 3) & 7, _NO_ID),
            (_OTHER, mode & 7, _NO_ID)]


def _read_acl(path: Path) -> list[tuple[int, int, int]]:
    try:
        raw = os.getxattr(path, _XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return _entries_from_mode(os.stat(path).st_mode)
        raise
    return [struct.unpack_from("<HHI", raw, off) for off in range(4, len(raw), 8)]


def grant_search(path: Path, uid: int) -> bool:
    """Give ``uid`` search permission on ``path`` by ACL; False if it already could search it."""
    st = os.stat(path)
    if st.st_uid == uid or st.st_mode & _SEARCH:
        return False
    entries = [e for e in _read_acl(path) if not (e[0] == _USER and e[2] == uid)]
    old = next((e[1] for e in _read_acl(path) if e[0] == _USER and e[2] == uid), 0)
    if old & _SEARCH:
        return False
    entries.append((_USER, old | _SEARCH, uid))
    group_class = 0
    for tag, perm, _ in entries:
        if tag in (_USER, _GROUP_OBJ, _GROUP):
            group_class |= perm
    entries = [e for e in entries if e[0] != _MASK] + [(_MASK, group_class, _NO_ID)]
    entries.sort(key=lambda e: (e[0], e[2]))
    raw = struct.pack("<I", _VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)
    os.setxattr(path, _XATTR, raw)
    return True


def grant_path(target: Path, uid: int) -> list[Path]:
    """Make every ancestor of ``target`` searchable by ``uid``; the directories changed."""
    changed = []
    for parent in reversed(target.resolve().parents):
        if grant_search(parent, uid):
            changed.append(parent)
    return changed
