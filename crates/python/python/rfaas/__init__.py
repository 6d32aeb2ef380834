"""rFaaS client: lease cores on an executor server, ship a function library once, invoke its
functions by writing straight into the executor's registered memory.

    import rfaas

    endpoint = rfaas.Endpoint("devices.json")
    lease = rfaas.Lease.from_database("executors_database.json", cores=1, memory_mb=256)
    with rfaas.Executor(endpoint, lease, rfaas.read_code("libfunctions.so")) as executor:
        assert executor.execute("empty", b"hello") == b"hello"
        future = executor.submit("empty", bytearray(b"async"))
        assert future.result() == b"async"

Payloads are any C-contiguous object with the buffer protocol (bytes, bytearray, memoryview,
numpy arrays); each is copied once into registered memory, and each result once out of it
(into bytes, or into a writable buffer with `execute_into`). Calls release the GIL while they
wait. Failures are `rfaas.Error` subclasses (invalid arguments: `ValueError`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional, Union

from ._rfaas import (
    BusyError,
    CodeError,
    ConfigError,
    Endpoint,
    Error,
    ExecutorFailedError,
    ExecutorLostError,
    Invocation,
    InvocationError,
    Lease,
    NoExecutorError,
    NoResourcesError,
    ProtocolError,
    RdmaError,
    RefusedError,
    TimeoutError,
    UnreachableError,
    log_to_stderr,
)
from ._rfaas import Executor as _NativeExecutor

__all__ = [
    "BusyError",
    "CodeError",
    "ConfigError",
    "Endpoint",
    "Error",
    "Executor",
    "ExecutorFailedError",
    "ExecutorLostError",
    "Invocation",
    "InvocationError",
    "Lease",
    "NoExecutorError",
    "NoResourcesError",
    "ProtocolError",
    "RdmaError",
    "RefusedError",
    "TimeoutError",
    "UnreachableError",
    "log_to_stderr",
    "read_code",
]


def read_code(path: Union[str, os.PathLike]) -> bytes:
    """The bytes of a function library (a native .so or a wasm module)."""
    with open(path, "rb") as f:
        return f.read()


class Executor(_NativeExecutor):
    """An allocated executor: `Executor(endpoint, lease, code, cores=1, ...)` allocates it.

    Blocking calls are `execute` and `execute_into`; `submit` returns a
    `concurrent.futures.Future`. As a context manager it deallocates on exit.
    """

    _waiters: Optional[ThreadPoolExecutor] = None
    _waiters_lock = threading.Lock()

    def submit(self, function: str, data, *, thread: int = 0,
               timeout: Optional[float] = None) -> "Future[bytes]":
        """Starts `function` on `data` on executor thread `thread`; the future's result is the
        result's bytes (or the call's exception). The payload is copied before this returns, so
        `data` may be reused at once. Raises `BusyError` at once when every input slot of the
        thread is taken by calls in flight."""
        call = self.submit_call(function, data, thread=thread)
        return self._waiter_pool().submit(call.wait, timeout)

    def _waiter_pool(self) -> ThreadPoolExecutor:
        # One waiting thread per call that can be in flight; each waits without the GIL.
        with Executor._waiters_lock:
            if self._waiters is None:
                self._waiters = ThreadPoolExecutor(
                    max_workers=self.cores * self.input_buf_count,
                    thread_name_prefix="rfaas-wait",
                )
            return self._waiters

    def deallocate(self) -> None:
        """Ends the allocation; calls in flight fail (their futures once their timeout has
        passed). Idempotent."""
        super().deallocate()
        if self._waiters is not None:
            self._waiters.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.deallocate()
