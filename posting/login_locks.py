"""Bounded locks that let one run at a time log in to a network for a bot (see SessionStore.login_lock).

A run that cannot take its lock in time raises LoginLockTimeout: it sent nothing, and its post is
retried later; it never waits past the bound.
"""
from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

# flock has no timeout: a busy file lock is tried again this often until the wait is over.
FILE_LOCK_POLL_SECONDS = 0.02

_process_locks: dict[Hashable, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class LoginLockTimeout(Exception):
    """Another run held the login lock for longer than this run would wait."""


def process_lock(key: Hashable) -> threading.Lock:
    """The one lock of this process for `key`."""
    with _process_locks_guard:
        return _process_locks.setdefault(key, threading.Lock())


@contextmanager
def holding(lock: threading.Lock, timeout: float) -> Iterator[None]:
    """Hold a thread lock, waiting at most `timeout` seconds for it."""
    if not lock.acquire(timeout=timeout):
        raise LoginLockTimeout(f"the login lock was busy for {timeout:g} s")
    try:
        yield
    finally:
        lock.release()


@contextmanager
def holding_file(path: str, timeout: float) -> Iterator[None]:
    """Hold an exclusive flock on `path` (made when missing), waiting at most `timeout` seconds.

    flock belongs to the open file, and every call opens the file anew: it excludes other
    threads of this process as well as other processes of the host. The lock goes with the
    file's closing, so a killed run never leaves it held.
    """
    deadline = time.monotonic() + timeout
    with open(path, "a") as file:
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LoginLockTimeout(f"the login lock was busy for {timeout:g} s") from None
                time.sleep(FILE_LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)
