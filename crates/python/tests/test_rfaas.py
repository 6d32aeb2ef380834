"""Tests of the rfaas package against a real executor manager.

Run by crates/benchmarks/tests/clients (which starts the manager and installs the wheel) with
RFAAS_TEST_DEVICES, RFAAS_TEST_EXECUTORS (files) and RFAAS_TEST_FUNCTIONS (libfunctions.so or
functions.wasm) set.
"""

import ast
import concurrent.futures
import importlib.resources
import os
import struct
import threading
import time
import unittest

import numpy as np

import rfaas

DEVICES = os.environ["RFAAS_TEST_DEVICES"]
EXECUTORS = os.environ["RFAAS_TEST_EXECUTORS"]
FUNCTIONS = os.environ["RFAAS_TEST_FUNCTIONS"]
NATIVE = FUNCTIONS.endswith(".so")


class Calls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.endpoint = rfaas.Endpoint(DEVICES)
        lease = rfaas.Lease.from_database(EXECUTORS, cores=1, memory_mb=256)
        cls.executor = rfaas.Executor(cls.endpoint, lease, rfaas.read_code(FUNCTIONS),
                                      hot_timeout_ms=0, max_payload=4096, input_buf_count=2,
                                      call_timeout=5.0)

    @classmethod
    def tearDownClass(cls):
        cls.executor.deallocate()

    def test_every_buffer_kind_comes_back_equal(self):
        grid = np.arange(12, dtype=np.int32).reshape(3, 4)
        for data in [b"", b"bytes", bytearray(b"bytearray"), memoryview(b"memoryview"),
                     np.linspace(0, 1, 7), grid, grid[1:]]:
            with self.subTest(kind=type(data).__name__):
                expected = bytes(memoryview(data).cast("B"))
                self.assertEqual(self.executor.execute("empty", data), expected)

    def test_execute_into_fills_a_numpy_array(self):
        data = np.arange(16, dtype=np.float64)
        out = np.zeros(16)
        self.assertEqual(self.executor.execute_into("empty", data * 3, out), 128)
        np.testing.assert_array_equal(out, data * 3)
        small = bytearray(4)
        with self.assertRaisesRegex(ValueError, "more than the 4 of the output buffer"):
            self.executor.execute_into("empty", b"0123456789", small)

    def test_futures_complete_in_any_order_with_their_own_bytes(self):
        payloads = [bytes([i]) * (100 + i) for i in range(8)]
        results = []
        for start in range(0, len(payloads), 2):  # two input slots: two calls in flight
            futures = [self.executor.submit("empty", p) for p in payloads[start:start + 2]]
            done, _ = concurrent.futures.wait(futures, timeout=5)
            self.assertEqual(len(done), 2)
            results += [f.result() for f in futures]
        self.assertEqual(results, payloads)

    def test_bad_input_is_one_clear_error_and_the_executor_carries_on(self):
        with self.assertRaisesRegex(rfaas.CodeError, "no function `nope`"):
            self.executor.execute("nope", b"")
        with self.assertRaisesRegex(ValueError, "not C-contiguous"):
            self.executor.execute("empty", np.arange(8)[::2])
        with self.assertRaisesRegex(ValueError, "buffer protocol"):
            self.executor.execute("empty", 42)
        with self.assertRaisesRegex(ValueError, "do not fit"):
            self.executor.execute("empty", bytes(4097))
        with self.assertRaisesRegex(ValueError, "read-only"):
            self.executor.execute_into("empty", b"x", b"read-only")
        with self.assertRaises(rfaas.InvocationError) as raised:
            self.executor.execute("oversize", bytes(16))
        self.assertEqual(raised.exception.return_code, 3)
        self.assertEqual(self.executor.execute("empty", b"still serving"), b"still serving")

    def test_errors_are_typed(self):
        for name in ["ConfigError", "CodeError", "TimeoutError", "BusyError",
                     "InvocationError", "ExecutorLostError", "NoExecutorError"]:
            self.assertTrue(issubclass(getattr(rfaas, name), rfaas.Error), name)
        with self.assertRaisesRegex(rfaas.ConfigError, "no-such-devices.json"):
            rfaas.Endpoint("no-such-devices.json")
        with self.assertRaisesRegex(rfaas.NoExecutorError, "64 cores"):
            rfaas.Lease.from_database(EXECUTORS, cores=64)

    @unittest.skipUnless(NATIVE, "the native library's sleep function")
    def test_a_blocking_call_releases_the_gil(self):
        counted = 0
        worker = threading.Thread(
            target=self.executor.execute, args=("sleep", struct.pack("<I", 300)))
        worker.start()
        while worker.is_alive():
            counted += 1
        worker.join()
        # With the GIL held for the 300 ms call, this thread would not have run at all.
        self.assertGreater(counted, 1000)

    @unittest.skipUnless(NATIVE, "the native library's sleep function")
    def test_timeouts_and_busy_slots(self):
        slow = struct.pack("<I", 400)
        with self.assertRaisesRegex(rfaas.TimeoutError, "did not answer within"):
            self.executor.execute("sleep", slow, timeout=0.1)
        # The timed-out call holds one slot until its result is in; the other is free.
        first = self.executor.submit("sleep", struct.pack("<I", 200))
        with self.assertRaises(rfaas.BusyError):
            self.executor.submit("empty", b"third")
        self.assertEqual(first.result(timeout=5), struct.pack("<I", 200))
        time.sleep(0.3)
        self.assertEqual(self.executor.execute("empty", b"after"), b"after")


class Package(unittest.TestCase):
    def test_stubs_name_what_the_native_module_has(self):
        stub = importlib.resources.files("rfaas").joinpath("_rfaas.pyi").read_text()
        self.assertTrue(importlib.resources.files("rfaas").joinpath("py.typed").is_file())
        names = [n.name for n in ast.parse(stub).body
                 if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
        self.assertGreater(len(names), 15)
        for name in names:
            self.assertTrue(hasattr(rfaas._rfaas, name), f"{name} is in the stubs only")

    def test_a_deallocated_executor_refuses_calls(self):
        endpoint = rfaas.Endpoint(DEVICES)
        lease = rfaas.Lease.from_database(EXECUTORS)
        with rfaas.Executor(endpoint, lease, rfaas.read_code(FUNCTIONS),
                            hot_timeout_ms=0) as executor:
            self.assertIn("empty", executor.functions)
        with self.assertRaisesRegex(RuntimeError, "deallocated"):
            executor.execute("empty", b"x")
        executor.deallocate()  # idempotent


if __name__ == "__main__":
    unittest.main()
