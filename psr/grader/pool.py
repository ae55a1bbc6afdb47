"""Worker processes that grade under a hard per-item timeout.

Every item runs in a worker process. The parent hands each idle worker a chunk of items; the
worker sends one result per item, so the parent knows when each item started and kills a worker
whose current item ran past ``timeout_s`` (SIGKILL, then a fresh worker takes the rest of the
chunk). A timeout, a crash (segfault, ``MemoryError``, ``RecursionError``) or an exception is a
wrong answer for that item only. Workers are forked (milliseconds, with sympy and math-verify
already imported by the parent; ``forkserver``/``spawn`` would re-import the caller's ``__main__``
script, which breaks scripts without a main guard) and cap their own address space, so a
``10^{10^{10}}`` cannot eat the machine's memory. ``PSR_GRADER_START_METHOD`` overrides.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import threading
import time
import warnings
from collections import deque
from multiprocessing.connection import wait

__all__ = ["GraderPool", "default_pool", "MAX_RESPONSE_CHARS"]

MAX_RESPONSE_CHARS = 200_000  # longer responses are graded wrong without being parsed
WORKER_MEMORY_BYTES = 2 << 30  # address space a worker may add on top of its start size
STARTUP_TIMEOUT_S = 60.0
MAX_STARTUP_FAILURES = 3
_READY = "__ready__"
_WARMED: list = []  # the parent's parser has been warmed once (forked workers inherit it)


def _limit_memory(extra: int) -> None:
    try:
        import resource

        with open("/proc/self/statm") as f:
            vm_pages = int(f.read().split()[0])
        cap = vm_pages * os.sysconf("SC_PAGE_SIZE") + extra
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except Exception:
        pass  # not Linux: the hard timeout still bounds every item


def _worker_main(conn, memory_bytes: int) -> None:
    """Worker loop: receive a chunk [(idx, kind, a, b, answer_type)], send (idx, verdict) per item."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from psr.grader import equiv

    _limit_memory(memory_bytes)
    conn.send(_READY)
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for idx, kind, a, b, atype in chunk:
            try:
                if kind == "grade":
                    ok = equiv.grade_local(a, b, atype)
                else:
                    ok = equiv.match_local(a, b)
            except BaseException:  # MemoryError, RecursionError, anything from sympy/antlr
                ok = False
            conn.send((idx, bool(ok)))


class _Worker:
    def __init__(self, ctx, memory_bytes: int):
        parent, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, memory_bytes), daemon=True)
        with warnings.catch_warnings():  # 3.12+: "fork() may lead to deadlocks" with threads;
            warnings.simplefilter("ignore", DeprecationWarning)  # a stuck worker is killed anyway
            self.proc.start()
        child.close()
        self.conn = parent
        self.ready = False
        self.born = time.monotonic()
        self.chunk: deque[int] = deque()
        self.started = 0.0  # when the current item (chunk[0]) started

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(5)
        except Exception:
            pass
        try:
            self.conn.close()
        except Exception:
            pass


class GraderPool:
    """A resizable set of grader workers. ``run`` is serialised by a lock (one batch at a time)."""

    def __init__(self, workers: int = 2, start_method: str | None = None,
                 memory_bytes: int = WORKER_MEMORY_BYTES):
        method = start_method or os.environ.get("PSR_GRADER_START_METHOD", "fork")
        if method not in mp.get_all_start_methods():
            method = "spawn"
        self.ctx = mp.get_context(method)
        if method == "forkserver":
            self.ctx.set_forkserver_preload(["psr.grader.equiv"])
        if method == "fork":  # children inherit the imports: warm from their first item
            import math_verify  # noqa: F401
            import latex2sympy2_extended  # noqa: F401

            from psr.grader import equiv

            if not _WARMED:
                equiv.warm_up()
                _WARMED.append(True)
        self.memory_bytes = memory_bytes
        self.workers: list[_Worker] = []
        self.n_timeouts = 0
        self.n_crashes = 0
        self._lock = threading.Lock()
        self.resize(workers)

    def resize(self, workers: int) -> None:
        workers = max(1, int(workers))
        while len(self.workers) < workers:
            self.workers.append(_Worker(self.ctx, self.memory_bytes))
        while len(self.workers) > workers:
            w = self.workers.pop()
            try:
                w.conn.send(None)
            except Exception:
                pass
            w.kill()

    def close(self) -> None:
        self.resize(1)
        for w in self.workers:
            w.kill()
        self.workers = []

    def _replace(self, w: _Worker) -> _Worker:
        w.kill()
        new = _Worker(self.ctx, self.memory_bytes)
        self.workers[self.workers.index(w)] = new
        return new

    def run(self, tasks: list[tuple], timeout_s: float) -> list[bool]:
        """Verdicts for ``tasks`` = [(kind, a, b, answer_type)], kind 'grade' or 'match'."""
        with self._lock:
            if not self.workers:
                self.resize(1)
            return self._run(tasks, float(timeout_s))

    def _run(self, tasks: list[tuple], timeout_s: float) -> list[bool]:
        n = len(tasks)
        results = [False] * n
        todo: deque[int] = deque()
        for i, (kind, a, b, _) in enumerate(tasks):
            if isinstance(a, str) and len(a) > MAX_RESPONSE_CHARS or isinstance(b, str) and len(b) > MAX_RESPONSE_CHARS:
                continue  # pathological size: wrong, never parsed
            todo.append(i)
        startup_failures = 0
        chunk_size = max(1, min(64, -(-len(todo) // (4 * len(self.workers)))))
        while todo or any(w.chunk for w in self.workers):
            now = time.monotonic()
            for w in list(self.workers):
                if w.ready and not w.chunk and todo:
                    ids = [todo.popleft() for _ in range(min(chunk_size, len(todo)))]
                    try:
                        w.conn.send([(i, *tasks[i]) for i in ids])
                    except (OSError, ValueError):
                        todo.extendleft(reversed(ids))
                        self.n_crashes += 1
                        self._replace(w)
                        continue
                    w.chunk.extend(ids)
                    w.started = time.monotonic()
            deadlines = [w.started + timeout_s for w in self.workers if w.chunk]
            deadlines += [w.born + STARTUP_TIMEOUT_S for w in self.workers if not w.ready]
            wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 0.05
            ready = wait([w.conn for w in self.workers], timeout=min(wait_s, 1.0))
            by_conn = {id(w.conn): w for w in self.workers}
            for conn in ready:
                w = by_conn[id(conn)]
                try:
                    while conn.poll():
                        msg = conn.recv()
                        if msg == _READY:
                            w.ready = True
                            continue
                        idx, ok = msg
                        results[idx] = ok
                        if w.chunk and w.chunk[0] == idx:
                            w.chunk.popleft()
                        w.started = time.monotonic()
                except (EOFError, OSError):  # the worker died: its current item is wrong
                    self.n_crashes += 1
                    self._fail_current(w, todo, results)
            now = time.monotonic()
            for w in list(self.workers):
                if w.chunk and now - w.started > timeout_s:
                    self.n_timeouts += 1
                    self._fail_current(w, todo, results)
                elif not w.ready and now - w.born > STARTUP_TIMEOUT_S:
                    startup_failures += 1
                    if startup_failures > MAX_STARTUP_FAILURES:
                        raise RuntimeError(f"grader workers did not start within {STARTUP_TIMEOUT_S:.0f} s "
                                           f"({startup_failures} tries)")
                    self._replace(w)
        return results

    def _fail_current(self, w: _Worker, todo: deque, results: list[bool]) -> None:
        if w.chunk:
            results[w.chunk.popleft()] = False
            todo.extendleft(reversed(w.chunk))
            w.chunk.clear()
        self._replace(w)


_DEFAULT: GraderPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool(workers: int | None = None) -> GraderPool:
    """The process-wide pool (created on first use, resized to ``workers`` when given)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None or (_DEFAULT.workers == [] and workers is None):
            _DEFAULT = GraderPool(workers or 1)
        elif workers is not None and workers != len(_DEFAULT.workers):
            with _DEFAULT._lock:
                _DEFAULT.resize(workers)
        return _DEFAULT


@atexit.register
def _close_default() -> None:
    if _DEFAULT is not None:
        _DEFAULT.close()
