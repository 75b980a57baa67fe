"""The server's copy of the store: requests read a snapshot, so a writer never waits for them.

DuckDB lets no process write a file that another process has open, even read-only. A
server that kept a connection to DIR/atelier.duckdb would lock `atelier score` out; one
that opened a connection per request paid the open (65-115 ms at 1M images here) and a
cold cache (a 17 ms query took 60 ms after an open) on every request. So the server
copies the store into its snapshot folder and keeps one read-only connection to the
copy; a request reads through its own cursor of that connection.

The copy is made without holding the store, once its files have been quiet for a moment,
and then checked under a shared lock on the store file (DuckDB's own lock: no writer can
be inside then): if the store's (mtime, size) is still what it was before the copy, the
copy is that committed state; if not, it is dropped and made again later. So a writer
is kept out for the microseconds of that check, never for a copy. When the store changes, a background thread
makes the next copy; until it is ready requests read the previous one, stale but
consistent (``StoreSnapshots.status``, in /health). A copy no longer current is closed and
deleted when its last request ends. Copies are named by the store's stamp, so the workers
of one server (``--workers``) share them (an flock serializes the copying).

Reads DIR/atelier.duckdb (and its .wal); writes only the snapshot folder.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluator.workspace.store import READ_ONLY_CONFIG, StoreLockedError

# The copy's connection: the store's read-only rules, plus DuckDB's memory bounded per
# worker (its default is 80 % of RAM, per process) and no spilling next to the copy.
SNAPSHOT_CONFIG: dict[str, object] = {**READ_ONLY_CONFIG, "memory_limit": "2GB", "temp_directory": ""}
# A copy takes as long as the disk does (1.2 s for the 900 MB 1M-image store here when
# idle, 3 s under load): after a copy of T seconds the next waits (1/COPY_DUTY - 1) T, so
# a store that keeps changing is not copied over and over.
COPY_DUTY = 0.2
# A background copy runs in a thread of its own at the lowest CPU priority: the copy is a
# kernel memcpy of the whole store (1.8-3.3 s for the 900 MB 1M-image store here), and at
# normal priority it took one of the 2 cores from the requests answered meanwhile.
BACKGROUND_NICE = 19
# A store written more often than it can be copied never gets a clean copy (each is dropped
# for a write during it: a commit every 2 s against a 3 s copy of the 1M store left the
# server 50 s stale and counting). After this long stale the next copy is made holding
# the store's shared lock, so a writer waits for that one copy (its open retries on the
# lock) and the answers are never more than about this old.
MAX_STALE_SECONDS = 30.0
# Files unchanged this long before a copy starts: file times tick every few ms, so a write
# after that shows in the (mtime, size) the copy is checked against.
QUIET_SECONDS = 0.05
# Remembered answers per copy: pages are a few to a few hundred KB, so 2,000 stay well
# under the copy's own memory budget, and cover the pages a team keeps asking for.
MEMO_ENTRIES = 2000


# Requests that compute (query the copy, search the index) at once: a few per core. 40 (the
# thread pool's size) sharing 2 cores thrash, and the remembered answers queued behind
# them; one per core left the CPU idle while a query's Python half held the GIL and, on a
# machine shared with other jobs, got the server a smaller share of the cores.
# Remembered answers need no slot.
WORK_SLOTS = 4 * (os.cpu_count() or 2)
_SLOTS = threading.BoundedSemaphore(WORK_SLOTS)
_HOLDING = threading.local()


@contextlib.contextmanager
def work_slot():
    """One of ``WORK_SLOTS`` for this thread (re-entrant), waiting at most until the request's deadline."""
    from evaluator.serve import deadline

    if getattr(_HOLDING, "depth", 0):
        _HOLDING.depth += 1
        try:
            yield
        finally:
            _HOLDING.depth -= 1
        return
    watcher = deadline.current()
    if not _SLOTS.acquire(timeout=watcher.remaining() if watcher else None):
        raise deadline.DeadlinePassed("every work slot stayed busy until the request's time limit")
    _HOLDING.depth = 1
    try:
        yield
    finally:
        _HOLDING.depth = 0
        _SLOTS.release()


@contextlib.contextmanager
def inline_work():
    """Work on the event loop's thread (a read model's answer: well under a millisecond): no
    slot is taken, since waiting for one there would stall every request."""
    depth = getattr(_HOLDING, "depth", 0)
    _HOLDING.depth = depth + 1
    try:
        yield
    finally:
        _HOLDING.depth = depth


def store_stamp(path: Path) -> tuple[int, int, int, int]:
    """(mtime, size) of the store and of its WAL: every committed write changes it."""
    parts: list[int] = []
    for candidate in (path, path.with_name(path.name + ".wal")):
        try:
            stat = candidate.stat()
            parts += [stat.st_mtime_ns, stat.st_size]
        except FileNotFoundError:
            parts += [0, 0]
    return tuple(parts)  # type: ignore[return-value]


@dataclass(eq=False)
class Snapshot:
    """One copy of the store and its connection; ``users`` requests are reading it."""

    path: Path
    stamp: tuple
    con: Any
    taken_at: float
    users: int = 0
    retired: bool = False
    # The copy's read model (``serve.readmodel``): None until built, or if building failed.
    model: Any = None
    # Answers computed from this copy (names, summaries, rendered pages): a copy never
    # changes, so they hold until it is retired. The least recently used go past MEMO_ENTRIES.
    memo: collections.OrderedDict = field(default_factory=collections.OrderedDict)
    memo_lock: threading.Lock = field(default_factory=threading.Lock)

    def recall(self, key: str, compute) -> tuple[Any, bool]:
        """(``compute()`` once per copy, whether it was remembered); computing takes a work slot."""
        with self.memo_lock:
            if key in self.memo:
                self.memo.move_to_end(key)
                return self.memo[key], True
        with work_slot():
            value = compute()
        with self.memo_lock:
            self.memo[key] = value
            while len(self.memo) > MEMO_ENTRIES:
                self.memo.popitem(last=False)
        return value, False

    def remember(self, key: str, compute):
        return self.recall(key, compute)[0]


class StoreSnapshots:
    """The current snapshot of one store, refreshed in the background when the store changes."""

    def __init__(self, store: Path, folder: Path, lock_wait: float, check_every: float = 0.5,
                 prepare: Callable[[Snapshot, Any], Any] | None = None) -> None:
        self.store = store
        # prepare(snapshot, previous model) -> the snapshot's read model (None: requests query the copy)
        self.prepare = prepare
        self.model_error: str | None = None
        self._preparing: set[threading.Thread] = set()  # builds under way (``close`` waits for them)
        self.folder = folder
        self.lock_wait = lock_wait
        self.check_every = check_every  # how often a request looks at the store's stamp
        self._lock = threading.Lock()  # guards _current, users, _last_check
        self._refresh_lock = threading.Lock()  # one copy at a time
        self._current: Snapshot | None = None
        self._last_check = 0.0
        self._refresher: threading.Thread | None = None
        self._next_copy = 0.0  # no new copy before this (monotonic): see COPY_DUTY
        self.copy_seconds: float | None = None  # how long the last copy took
        self._stale_since: float | None = None  # monotonic: the first failed copy since the last good one
        self.held_copies = 0  # copies made holding the store (MAX_STALE_SECONDS)
        self.last_error: str | None = None
        self._prefix = hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:12]

    # ------------------------------------------------------------ requests

    def acquire(self) -> Snapshot:
        """The snapshot a request reads (``release`` it after); the first one is taken now.

        Raises ``StoreLockedError`` when no snapshot exists yet and a writer held the store
        for the whole ``lock_wait``.
        """
        now = time.monotonic()
        with self._lock:
            current = self._current
            due = now - self._last_check >= self.check_every
            if due:
                self._last_check = now
        if current is None:
            self.refresh(self.lock_wait)
        elif due and now >= self._next_copy and store_stamp(self.store) != current.stamp:
            self._refresh_in_background()
        with self._lock:
            current = self._current
            assert current is not None  # refresh() set it or raised
            current.users += 1
            return current

    def ready(self) -> bool:
        """Whether the current snapshot has its read model (a request can be answered without waiting)."""
        current = self._current
        return current is not None and current.model is not None

    def remembered(self, key: str) -> Any:
        """What the current snapshot remembers under ``key``, or None (as a request, it notices a
        changed store: ``acquire``)."""
        snapshot = self.acquire()
        try:
            with snapshot.memo_lock:
                if key not in snapshot.memo:
                    return None
                snapshot.memo.move_to_end(key)
                return snapshot.memo[key]
        finally:
            self.release(snapshot)

    def release(self, snapshot: Snapshot) -> None:
        with self._lock:
            snapshot.users -= 1
            done = snapshot.retired and snapshot.users == 0
        if done:
            self._discard(snapshot)

    @contextlib.contextmanager
    def reading(self):
        """A cursor of the current snapshot for one request, and the snapshot itself."""
        snapshot = self.acquire()
        cursor = None
        try:
            cursor = snapshot.con.cursor()
            yield snapshot, cursor
        finally:
            if cursor is not None:
                cursor.close()
            self.release(snapshot)

    def status(self) -> dict:
        """What /health says about the snapshot: when it was taken, whether the store has moved on."""
        with self._lock:
            current = self._current
        if current is None:
            return {"taken_at": None, "stale": None, "refresh_error": self.last_error}
        stale = store_stamp(self.store) != current.stamp
        return {"taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(current.taken_at)),
                "age_seconds": round(time.time() - current.taken_at, 1), "stale": stale,
                "copy_seconds": round(self.copy_seconds, 3) if self.copy_seconds is not None else None,
                "refresh_error": self.last_error if stale else None,
                "held_copies": self.held_copies,
                "read_model": current.model.status() if current.model is not None else None,
                "read_model_error": self.model_error}

    # ------------------------------------------------------------ copies

    def refresh(self, wait: float, background: bool = False) -> None:
        """Copy the store if it changed since the current snapshot (waiting ``wait`` s in all, for
        another request's copy and for a writer: a request never queues behind several waits).
        ``background``: nobody waits for this copy, so it yields the CPU to requests."""
        started = time.monotonic()
        if not self._refresh_lock.acquire(timeout=wait):
            raise StoreLockedError(f"store {self.store} is being copied or written (waited {wait:g} s)")
        try:
            current = self._current
            if current is not None and store_stamp(self.store) == current.stamp:
                return
            fresh = self._copy(max(0.0, wait - (time.monotonic() - started)), background)
            if current is not None and current.model is not None:
                # before the swap: requests never fall back from a read model to the queries
                self._prepare(fresh, current.model)
            with self._lock:
                old, self._current = self._current, fresh
                if old is not None:
                    old.retired = True
                discard = old is not None and old.users == 0
            self.last_error = None
        finally:
            self._refresh_lock.release()
        if discard:
            self._discard(old)
        if self.prepare is not None and fresh.model is None:  # the first copy: answer by queries meanwhile
            threading.Thread(target=self._prepare, args=(fresh, None), name="atelier-read-model", daemon=True).start()

    def _prepare(self, snapshot: Snapshot, previous: Any) -> None:
        """Build ``snapshot``'s read model (holding it as a user, so it is not closed meanwhile)."""
        with self._lock:
            snapshot.users += 1
            self._preparing.add(threading.current_thread())
        try:
            snapshot.model = self.prepare(snapshot, previous)
            self.model_error = None
        except Exception as exc:  # noqa: BLE001 - requests query the copy instead; /health says why
            self.model_error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._preparing.discard(threading.current_thread())
            self.release(snapshot)

    def _copy(self, wait: float, background: bool = False) -> Snapshot:
        """A new snapshot: copied without holding the store, then checked under a read-only
        connection (no writer inside) to be the state the store still has.

        The copy starts once the files have been unchanged for ``QUIET_SECONDS``, so any
        write during it moves their (mtime, size); if that moved by the check, the copy is
        dropped (``StoreLockedError``: retried later, the previous snapshot still serves).
        The store is held only for the check, so a writer never waits for a copy, unless
        the snapshot has been stale for ``MAX_STALE_SECONDS``: then the copy holds it.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        give_up = time.monotonic() + wait
        if self._stale_since is not None and time.monotonic() - self._stale_since >= MAX_STALE_SECONDS:
            return self._copy_holding_store(give_up)
        try:
            stamp = self._quiet_stamp(give_up)
            path = self._copy_of(stamp, functools.partial(self._plain_copy, background=background))
            with _no_writer(self.store, give_up):
                if store_stamp(self.store) != stamp:
                    _remove_pair(path)
                    raise StoreLockedError(f"store {self.store} was written during the copy; copying again later")
                # opened before letting go of the store: no worker can retire this copy in between
                return self._fresh(path, stamp)
        except StoreLockedError:
            self._stale_since = self._stale_since or time.monotonic()
            raise

    def _plain_copy(self, target: Path, background: bool) -> None:
        if background:  # nobody waits for it: leave the CPU to the requests
            at_low_priority(_copy_pair, self.store, target)
        else:
            _copy_pair(self.store, target)

    def _copy_holding_store(self, give_up: float) -> Snapshot:
        """A copy made under the store's shared lock (no writer can commit meanwhile), at normal
        priority: a writer is waiting for it. The file is read through the locked handle, since
        closing any other handle of it would drop the lock."""
        with _no_writer(self.store, give_up) as handle:
            stamp = store_stamp(self.store)
            path = self._copy_of(stamp, lambda target: _copy_pair(self.store, target, handle))
            self.held_copies += 1
            return self._fresh(path, stamp)

    def _copy_of(self, stamp: tuple, copy: Callable[[Path], None]) -> Path:
        """The copy of the store's state ``stamp``, made by ``copy(target)`` unless another worker
        of this server made it already; sets when the next copy may start (COPY_DUTY)."""
        path = self.folder / f"{self._prefix}-{'-'.join(map(str, stamp))}.duckdb"
        started = time.monotonic()
        with open(self.folder / ".copy.lock", "a+") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # another worker may be copying the same state
            if not path.is_file():
                copy(path)
        self.copy_seconds = time.monotonic() - started
        self._next_copy = time.monotonic() + self.copy_seconds * (1 / COPY_DUTY - 1)
        return path

    def _fresh(self, path: Path, stamp: tuple) -> Snapshot:
        self._stale_since = None
        return Snapshot(path=path, stamp=stamp, con=_connect_copy(path), taken_at=time.time())

    def _quiet_stamp(self, give_up: float) -> tuple:
        """The store's stamp once its files have been unchanged for ``QUIET_SECONDS``."""
        while True:
            stamp = store_stamp(self.store)
            quiet_for = time.time() - max(stamp[0], stamp[2]) / 1e9
            if quiet_for >= QUIET_SECONDS:
                return stamp
            if time.monotonic() >= give_up:
                raise StoreLockedError(f"store {self.store} is being written (changed {quiet_for:.3f} s ago)")
            time.sleep(QUIET_SECONDS)

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refresher is not None and self._refresher.is_alive():
                return
            self._refresher = threading.Thread(target=self._refresh_quietly, name="atelier-snapshot", daemon=True)
            self._refresher.start()

    def _refresh_quietly(self) -> None:
        """A background refresh: a writer still holding the store is no error, only a later retry."""
        try:
            self.refresh(wait=min(self.lock_wait, 1.0), background=True)
        except StoreLockedError:
            self.last_error = "a writer holds the store; serving the previous snapshot"
        except Exception as exc:  # noqa: BLE001 - keep serving the previous copy, and say why in /health
            self.last_error = f"{type(exc).__name__}: {exc}"

    def _discard(self, snapshot: Snapshot) -> None:
        snapshot.con.close()
        _remove_pair(snapshot.path)  # another worker's open handle stays valid (POSIX)

    def close(self) -> None:
        """Close and delete the current snapshot (at shutdown), once a read model's build has ended:
        a process exiting under DuckDB's running query aborts instead of exiting 0."""
        with self._lock:
            building = list(self._preparing)
        for thread in building:
            thread.join(timeout=120)
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current.retired = True
            if current.users == 0:
                self._discard(current)


@contextlib.contextmanager
def _no_writer(store: Path, give_up: float):
    """Hold a shared lock on the store file while the block runs: no writer is inside it then.

    DuckDB locks the database file itself (fcntl: a writer exclusively, a read-only
    connection shared), so this is what a read-only open would hold, without the open
    (the catalog read costs 65-115 ms at 1M images): a writer is kept out for microseconds.
    A writer holding the store is waited for until ``give_up`` (monotonic), then ``StoreLockedError``.
    POSIX drops all of a process's locks on a file when it closes any handle of it, so this
    is only for a process that has no DuckDB connection to the store (the server's does not).
    """
    with open(store, "rb") as handle:
        while True:
            try:
                fcntl.lockf(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except OSError:  # EAGAIN / EACCES: a writer holds it
                if time.monotonic() >= give_up:
                    raise StoreLockedError(f"store {store} is locked by a writer") from None
                time.sleep(0.02)
        try:
            yield handle
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def _copy_pair(store: Path, target: Path, store_handle: Any = None) -> None:
    """Copy the store (and its WAL, if any) to ``target`` under temporary names, then rename:
    the database file appears last, whole. ``store_handle``: read the store through this
    open file (one holding a lock on it) instead of opening it again."""
    wal = store.with_name(store.name + ".wal")
    parts = [(wal, target.with_name(target.name + ".wal"))] if wal.is_file() else []
    for source, final in [*parts, (store, target)]:
        tmp = final.with_name(f".{final.name}.{os.getpid()}.partial")
        if source == store and store_handle is not None:
            _copy_from_handle(store_handle, tmp)
        else:
            shutil.copyfile(source, tmp)
        tmp.replace(final)


def _copy_from_handle(handle: Any, target: Path) -> None:
    """The whole file behind ``handle`` into ``target``, in the kernel (sendfile), from offset 0."""
    size = os.fstat(handle.fileno()).st_size
    with open(target, "wb") as out:
        offset = 0
        while offset < size:
            sent = os.sendfile(out.fileno(), handle.fileno(), offset, size - offset)
            if not sent:
                raise OSError(f"{target}: the copy stopped at byte {offset:,} of {size:,}")
            offset += sent


def at_low_priority(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a thread of its own at nice ``BACKGROUND_NICE``, waited for; its result
    or its exception. A thread of its own because an unprivileged thread cannot lower its nice
    again, and the caller goes on to other work (DuckDB's threads, started later, would inherit it)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="atelier-snapshot-copy",
                            initializer=_lower_own_priority) as worker:
        return worker.submit(fn, *args).result()


def _lower_own_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # no per-thread priority here: run at the caller's
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def _remove_pair(path: Path) -> None:
    for candidate in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


def _connect_copy(path: Path):
    import duckdb

    return duckdb.connect(str(path), read_only=True, config=SNAPSHOT_CONFIG)
