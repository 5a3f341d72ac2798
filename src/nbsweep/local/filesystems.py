"""Which file system a path is on: SQLite's locks cannot be trusted on network ones."""

from __future__ import annotations

import re
from pathlib import Path

# SQLite's own documentation says so for NFS; the others share the problem.
NETWORK_FILE_SYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre"}
    | {"fuse.sshfs", "fuse.ceph", "fuse.glusterfs"}
)


def network_file_system(path: Path, mounts: str) -> str | None:
    """The network file system type holding ``path`` (absolute, resolved), or None.

    ``mounts`` is /proc/mounts' text. The longest mount point holding the path decides, the
    later line on a tie (it was mounted over the earlier one)."""
    best: tuple[int, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1]))
        if (mount_point == path or mount_point in path.parents) and (
            best is None or len(mount_point.parts) >= best[0]
        ):
            best = (len(mount_point.parts), fields[2])
    return best[1] if best is not None and best[1] in NETWORK_FILE_SYSTEMS else None


def read_mounts() -> str:
    try:
        return Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""  # no /proc (macOS, Windows): nothing to check against
