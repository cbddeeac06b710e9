"""Tests of the ctypes wrapper, driving libtether_ffi from real threads.

Run by ``cargo test -p tether-ffi`` (tests/python.rs), which sets
TETHER_FFI_LIB to the library it just built; by hand:

    TETHER_FFI_LIB=target/debug/libtether_ffi.so python3 ffi/python/test_tether.py -v
"""

import gc
import os
import queue
import random
import sys
import threading
import time
import unittest
import weakref

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tether  # noqa: E402
from tether import Registry, Released, Status, TetherError  # noqa: E402

SCALE = int(os.environ.get("TETHER_FFI_PY_SCALE", "100"))


def scaled(n):
    return max(1, n * SCALE // 100)


class Witness:
    """A Python object that records where it was used and where it died."""

    deaths = []  # (id, thread ident)
    deaths_lock = threading.Lock()

    def __init__(self, ident):
        self.ident = ident
        self.uses = 0
        self.lock = threading.Lock()

    def touch(self):
        with self.lock:
            self.uses += 1
        return self.ident

    def __del__(self):
        with Witness.deaths_lock:
            Witness.deaths.append((self.ident, threading.get_ident()))


def in_thread(fn, *args):
    """Runs fn(*args) on a new thread; returns its result or raises its error."""
    box = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


class Finalized:
    """An on_finalize hook recording (object ident, thread ident)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = []

    def __call__(self, obj):
        with self.lock:
            self.seen.append((getattr(obj, "ident", obj), threading.get_ident()))

    def threads(self):
        with self.lock:
            return {t for _, t in self.seen}

    def count(self):
        with self.lock:
            return len(self.seen)


class SingleThread(unittest.TestCase):
    def setUp(self):
        self.fin = Finalized()
        self.reg = Registry(on_finalize=self.fin)

    def tearDown(self):
        self.reg.free()

    def test_insert_get_release(self):
        obj = Witness("a")
        alive = weakref.ref(obj)
        h = self.reg.insert(obj)
        self.assertTrue(0 < h < 2**53)
        del obj
        gc.collect()
        self.assertIsNotNone(alive(), "the wrapper's table keeps it alive")
        self.assertIs(self.reg.get(h), alive())
        self.assertEqual(self.reg.retain(h), 2)
        self.assertEqual(self.reg.count(h), 2)
        self.assertEqual(self.reg.release(h), Released.HELD)
        self.assertEqual(len(self.reg), 1)
        self.assertEqual(self.reg.release(h), Released.FINALIZED)
        gc.collect()
        self.assertIsNone(alive(), "let go once finalized")
        self.assertEqual(self.fin.seen, [("a", threading.get_ident())])
        self.assertEqual(len(self.reg), 0)
        self.assertEqual(self.reg.objects(), 0)

    def test_errors_carry_their_status(self):
        h = self.reg.insert("x")
        self.reg.release(h)
        cases = [
            (lambda: self.reg.get(h), Status.STALE),
            (lambda: self.reg.release(h), Status.STALE),  # double release
            (lambda: self.reg.retain(0), Status.INVALID),
            (lambda: self.reg.retain(2**53), Status.INVALID),
            (lambda: self.reg.retain(2**64 - 1), Status.INVALID),
            (lambda: self.reg.claim(12345), Status.INVALID),  # forged token
            (lambda: self.reg.drop_transfer(1), Status.INVALID),
        ]
        for call, status in cases:
            with self.assertRaises(TetherError) as e:
                call()
            self.assertEqual(e.exception.status, status)
        h = self.reg.insert("y")
        with self.assertRaises(TetherError) as e:
            self.reg.unpin(h)
        self.assertEqual(e.exception.status, Status.NOT_PINNED)
        t = self.reg.transfer(h)
        self.assertEqual(self.reg.claim(t), h)
        with self.assertRaises(TetherError) as e:
            self.reg.claim(t)
        self.assertEqual(e.exception.status, Status.TRANSFER_CLAIMED)
        self.reg.release(h)

    def test_foreign_handles_are_refused(self):
        other = Registry()
        try:
            h = other.insert("z")
            with self.assertRaises(TetherError) as e:
                self.reg.get(h)
            self.assertEqual(e.exception.status, Status.FOREIGN)
            other.release(h)
        finally:
            other.free()

    def test_every_status_has_a_message(self):
        messages = {tether.status_str(s) for s in Status}
        self.assertEqual(len(messages), len(Status))
        self.assertEqual(tether.status_str(Status.OK), "ok")
        self.assertIn("unknown", tether.status_str(len(Status)))

    def test_pins_open_an_object_to_every_thread(self):
        h = self.reg.insert(Witness("pinned"))
        with self.assertRaises(TetherError) as e:
            in_thread(self.reg.get, h)
        self.assertEqual(e.exception.status, Status.NOT_HELD)
        self.reg.pin(h)
        self.assertEqual(in_thread(lambda: self.reg.get(h).touch()), "pinned")
        self.reg.release(h)
        self.assertEqual(self.fin.count(), 0)
        self.reg.unpin(h)
        self.assertEqual(self.fin.count(), 1)

    def test_free_finalizes_what_is_still_held(self):
        self.reg.insert(Witness("held"))
        h = self.reg.insert(Witness("in a token"))
        self.reg.transfer(h)
        self.reg.free()
        self.assertEqual(sorted(i for i, _ in self.fin.seen), ["held", "in a token"])
        self.assertEqual(self.fin.threads(), {threading.get_ident()})

    def test_a_finalizer_may_call_the_registry(self):
        inner = self.reg.insert("inner")

        def release_inner(obj):
            if obj == "outer":
                self.assertEqual(self.reg.release(inner), Released.FINALIZED)

        reg = self.reg
        reg._table.on_finalize = release_inner
        outer = reg.insert("outer")
        self.assertEqual(reg.release(outer), Released.FINALIZED)
        self.assertEqual(len(reg), 0)


class HomeAndWorkers(unittest.TestCase):
    """A home thread owns Python objects; workers claim, use and release
    them; every object dies on the home thread, never before its last user
    let go."""

    def test_home_thread_with_workers(self):
        objects = scaled(400)
        workers = 4
        hops = 4
        fin = Finalized()
        reg = Registry(on_finalize=fin)
        mail = queue.Queue()
        home_ident = {}
        done = threading.Event()
        errors = []
        Witness.deaths.clear()

        def home():
            home_ident["id"] = threading.get_ident()
            for i in range(objects):
                h = reg.insert(Witness(i))
                mail.put((reg.transfer(h), i, hops))  # the home keeps nothing
            # The home's event loop: pump until everything came home (or a
            # worker failed: then stop, and the test reports its error).
            while fin.count() < objects and not done.is_set():
                if reg.pump() == 0:
                    done.wait(0.0005)
            for _ in range(workers):
                mail.put(None)

        def worker(seed):
            rng = random.Random(seed)
            try:
                while True:
                    item = mail.get()
                    if item is None:
                        return
                    token, i, left = item
                    h = reg.claim(token)
                    if rng.random() < 0.2:
                        gc.collect()  # a greedy collector: must not matter
                    obj = reg.get(h)
                    assert obj.touch() == i, "a handle resolved to another object"
                    assert reg.retain(h) == 2
                    assert reg.release(h) == Released.HELD
                    del obj
                    if left > 1:
                        mail.put((reg.transfer(h), i, left - 1))
                    else:
                        assert reg.release(h) == Released.QUEUED
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                done.set()
                while mail.get() is not None:  # let the others finish
                    pass

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(workers)]
        threads.append(threading.Thread(target=home))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
            self.assertFalse(t.is_alive(), "a thread hung")
        self.assertEqual(errors, [])
        gc.collect()
        self.assertEqual(fin.count(), objects)
        self.assertEqual(fin.threads(), {home_ident["id"]}, "finalized off the home thread")
        self.assertEqual(sorted(i for i, _ in fin.seen), list(range(objects)))
        with Witness.deaths_lock:
            deaths = list(Witness.deaths)
        self.assertEqual(len(deaths), objects)
        self.assertEqual({t for _, t in deaths}, {home_ident["id"]}, "died off the home thread")
        self.assertEqual(len(reg), 0)
        self.assertEqual(reg.objects(), 0)
        reg.free()

    def test_a_worker_exit_releases_what_it_holds(self):
        fin = Finalized()
        reg = Registry(on_finalize=fin)
        tokens = [reg.transfer(reg.insert(Witness(i))) for i in range(3)]

        def claim_and_exit():
            for t in tokens:
                reg.claim(t)  # never released: the thread's exit does it

        in_thread(claim_and_exit)
        # Thread.join() returns before the OS thread's exit destructors (where
        # tether releases the thread's references) have run: pump until the
        # three values came home.
        pumped, deadline = 0, time.monotonic() + 30
        while pumped < 3 and time.monotonic() < deadline:
            pumped += reg.pump()
            time.sleep(0.001)
        self.assertEqual(pumped, 3)
        self.assertEqual(fin.threads(), {threading.get_ident()})
        self.assertEqual(reg.objects(), 0)
        reg.free()

    def test_strangers_cannot_touch_what_they_do_not_hold(self):
        reg = Registry()
        h = reg.insert(Witness("mine"))
        for call in (reg.get, reg.retain, reg.release, reg.transfer, reg.pin):
            with self.assertRaises(TetherError) as e:
                in_thread(call, h)
            self.assertEqual(e.exception.status, Status.NOT_HELD)
        self.assertEqual(in_thread(reg.count, h), 0)
        self.assertEqual(reg.release(h), Released.FINALIZED)
        reg.free()


class Readme(unittest.TestCase):
    def test_the_readme_example_runs(self):
        import contextlib
        import io

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")
        with open(path) as f:
            text = f.read()
        code = text.split("```python\n", 1)[1].split("```", 1)[0]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
        self.assertEqual(out.getvalue(), "worker: hello\nlet go at home: 1\n")


class InterpreterExit(unittest.TestCase):
    """The C library finalizes a thread's leftovers at its exit, and the main
    thread's exit runs after the interpreter is gone: the wrapper must have
    run every callback before then."""

    SCRIPT = r"""
import sys, threading, time
sys.path.insert(0, {path!r})
import tether
kept = tether.Registry()          # never freed, still reachable at exit
lost = tether.Registry()          # never freed, unreachable before exit
for reg in (kept, lost):
    tokens = [reg.transfer(reg.insert(object())) for _ in range(3)]
    held = reg.insert(object())   # held by the main thread at exit
    t = threading.Thread(target=lambda: [reg.claim(x) for x in tokens])
    t.start(); t.join()           # the worker exits holding them: queued here
time.sleep(0.05)
del lost, reg
print("exiting")
"""

    def test_exit_without_free_does_not_crash(self):
        import subprocess

        script = self.SCRIPT.format(path=os.path.dirname(os.path.abspath(__file__)))
        for _ in range(3):
            run = subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
            )
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertEqual(run.stdout, "exiting\n")


if __name__ == "__main__":
    unittest.main()
