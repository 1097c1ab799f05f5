"""What the local launchers share: how they speak, how they fail, and their pid files."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def say(message: str) -> None:
    print(f"[infra] {message}", flush=True)


class InfraError(RuntimeError):
    """A local server could not be installed or started; the message says what to do."""


def read_pid(path: Path) -> int | None:
    """The pid in `path` if that process is alive (a zombie, exited but not yet reaped, is not)."""
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return pid
    return None if state in ("Z", "X") else pid


def stop_pid(pid_file: Path, name: str, grace: float = 20.0) -> None:
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return
    say(f"stopping {name} (pid {pid})...")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and read_pid(pid_file):
        time.sleep(0.2)
    if read_pid(pid_file):
        say(f"{name} did not stop in {grace:.0f}s; killing it")
        os.kill(pid, signal.SIGKILL)
    # Gone for good before we return: a dying broker still writes to its data directory,
    # and a reset that deletes it meanwhile leaves a half-made one that `format` refuses.
    while read_pid(pid_file):
        time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
