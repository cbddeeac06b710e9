"""Python objects in a tether registry, through tether's C API (ctypes).

tether counts references per thread and finalizes each object on its home
thread (the thread that inserted it). This module stores Python objects:
the registry holds an integer key as its ``void *`` value, and the wrapper
keeps the object alive in its own table until tether's finalizer callback
removes it, on the home thread. So a worker thread that holds a handle can
always reach the object, whatever the home thread's garbage collector does,
and the object's last Python reference is dropped on its home thread.

    reg = tether.Registry()            # loads libtether_ffi (see load())
    h = reg.insert(obj)                # this thread is obj's home; holds 1
    t = reg.transfer(h)                # an int token, for another thread
    # on a worker:
    h = reg.claim(t)                   # the worker's own reference
    reg.get(h).method()
    reg.release(h)                     # Released.QUEUED: sent home
    # on the home thread, in its loop:
    reg.pump()                         # the object is let go here
    reg.free()                         # when every thread is done

Threads and the GIL: every call goes through ``ctypes.CDLL``, which releases
the GIL for the duration of the C call; the finalizer callback takes the GIL
again when it runs. Any tether call on a home thread may run finalizers
(``pump`` always, the others when something is queued), so the wrapper never
holds a lock of its own across a tether call, and neither should its users:
a callback that needs a lock the pumping thread holds would deadlock.

Errors raise :class:`TetherError`, whose ``status`` is a :class:`Status`.
"""

import atexit
import ctypes
import enum
import itertools
import os
import threading
import weakref

__all__ = ["Registry", "TetherError", "Status", "Released", "load"]


class Status(enum.IntEnum):
    """``tether_status``: the result of every fallible call."""

    OK = 0
    STALE = 1
    INVALID = 2
    FOREIGN = 3
    NOT_HELD = 4
    NOT_PINNED = 5
    OVERFLOW = 6
    FULL = 7
    FORKED = 8
    TRANSFER_CLAIMED = 9
    THREAD_EXITED = 10
    CLOSED = 11
    NULL_ARGUMENT = 12
    PANIC = 13


class Released(enum.IntEnum):
    """``tether_released``: what a release did."""

    HELD = 0  # still alive
    FINALIZED = 1  # the last reference, on the home thread: let go now
    QUEUED = 2  # the last reference, elsewhere: sent to the home thread


class TetherError(Exception):
    """A tether call failed; nothing changed. ``status`` says why."""

    def __init__(self, status, message):
        try:
            status = Status(status)
        except ValueError:
            pass
        super().__init__(f"{getattr(status, 'name', status)}: {message}")
        self.status = status


_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)

_lib = None
_lib_lock = threading.Lock()


def load(path=None):
    """Loads the C library once: ``path``, else ``$TETHER_FFI_LIB``, else
    ``libtether_ffi.so`` from the dynamic loader's search path."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        lib = ctypes.CDLL(path or os.environ.get("TETHER_FFI_LIB") or "libtether_ffi.so")
        reg, u64, u32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32
        status = ctypes.c_uint32
        signatures = {
            "tether_registry_new": ([_FINALIZER, ctypes.c_void_p], reg),
            "tether_registry_free": ([reg], None),
            "tether_insert": ([reg, ctypes.c_void_p, ctypes.POINTER(u64)], status),
            "tether_retain": ([reg, u64, ctypes.POINTER(u32)], status),
            "tether_release": ([reg, u64, ctypes.POINTER(u32)], status),
            "tether_get": ([reg, u64, ctypes.POINTER(ctypes.c_void_p)], status),
            "tether_count": ([reg, u64, ctypes.POINTER(u32)], status),
            "tether_pin": ([reg, u64], status),
            "tether_unpin": ([reg, u64], status),
            "tether_transfer": ([reg, u64, ctypes.POINTER(u64)], status),
            "tether_claim": ([reg, u64, ctypes.POINTER(u64)], status),
            "tether_drop_transfer": ([reg, u64], status),
            "tether_pump": ([reg], ctypes.c_size_t),
            "tether_len": ([reg], ctypes.c_size_t),
            "tether_status_str": ([status], ctypes.c_char_p),
        }
        for name, (args, res) in signatures.items():
            fn = getattr(lib, name)
            fn.argtypes = args
            fn.restype = res
        _lib = lib
        return lib


def status_str(status):
    """The C library's static message for a status value."""
    return load().tether_status_str(int(status)).decode()


class _Table:
    """The objects of one registry, by key, kept alive until finalized."""

    def __init__(self, on_finalize):
        self.lock = threading.Lock()  # guards `objects`; never held across a C call
        self.objects = {}
        self.on_finalize = on_finalize
        self.freed = False


# Every table whose registry may still call the finalizer, by ctx id. A
# freed registry's table stays here while it has objects: values queued to
# a home thread that is still alive are finalized there after the free.
_tables = {}
_tables_lock = threading.Lock()
_table_ids = itertools.count(1)
_keys = itertools.count(1)  # value keys, never 0 (a NULL void *)


def _finalize(value, ctx):
    # ctypes runs this with the GIL held, on the thread where tether
    # finalizes: the value's home thread while it lives.
    with _tables_lock:
        table = _tables.get(ctx)
    if table is None:
        return
    with table.lock:
        obj = table.objects.pop(value, None)
        drop = table.freed and not table.objects
    if drop:
        with _tables_lock:
            _tables.pop(ctx, None)
    if table.on_finalize is not None:
        table.on_finalize(obj)
    del obj  # the table's reference, dropped here on this thread


# One callback object for every registry, alive as long as the module: a
# registry may call it after free() (see _tables).
_finalizer = _FINALIZER(_finalize)

# Registries not freed yet. At interpreter exit they are freed, and the
# main thread's leftovers (values that registries freed elsewhere queued to
# it) are finalized, while Python can still run the callback: otherwise the
# C library's thread-exit cleanup of the main thread, which runs in exit()
# after the interpreter is gone, would call the finalizer into a dead
# interpreter (a crash in PyGILState_Ensure).
_live = weakref.WeakSet()


@atexit.register
def _free_all():
    for reg in list(_live):
        reg.free()
    if _lib is not None:
        # A pump on any registry first finalizes this thread's leftovers.
        scratch = _lib.tether_registry_new(_finalizer, 0)
        if scratch:
            _lib.tether_pump(scratch)
            _lib.tether_registry_free(scratch)


class Registry:
    """A tether registry of Python objects. Share one ``Registry`` among
    threads; handles and tokens are ints.

    ``on_finalize(obj)``, if given, is called with each object when tether
    finalizes it (on its home thread), before the table lets go of it.
    """

    def __init__(self, lib_path=None, on_finalize=None):
        self._lib = load(lib_path)
        self._table = _Table(on_finalize)
        self._ctx = next(_table_ids)
        with _tables_lock:
            _tables[self._ctx] = self._table
        self._reg = self._lib.tether_registry_new(_finalizer, self._ctx)
        if not self._reg:
            with _tables_lock:
                del _tables[self._ctx]
            raise TetherError(Status.PANIC, "tether_registry_new failed")
        _live.add(self)

    def _check(self, status):
        if status != Status.OK:
            raise TetherError(status, status_str(status))

    def _ptr(self):
        if not self._reg:
            raise TetherError(Status.NULL_ARGUMENT, "the registry was freed")
        return self._reg

    def insert(self, obj):
        """Stores ``obj``; the calling thread becomes its home and holds one
        reference. Returns its handle."""
        key = next(_keys)
        with self._table.lock:
            self._table.objects[key] = obj
        out = ctypes.c_uint64()
        status = self._lib.tether_insert(self._ptr(), key, ctypes.byref(out))
        if status != Status.OK:
            with self._table.lock:
                self._table.objects.pop(key, None)  # not stored: never finalized
            self._check(status)
        return out.value

    def retain(self, h):
        """+1 reference of the calling thread; returns its count."""
        out = ctypes.c_uint32()
        self._check(self._lib.tether_retain(self._ptr(), h, ctypes.byref(out)))
        return out.value

    def release(self, h):
        """-1 reference of the calling thread; returns a :class:`Released`."""
        out = ctypes.c_uint32()
        self._check(self._lib.tether_release(self._ptr(), h, ctypes.byref(out)))
        return Released(out.value)

    def get(self, h):
        """The object (for a thread that holds it, its home, or if pinned)."""
        out = ctypes.c_void_p()
        self._check(self._lib.tether_get(self._ptr(), h, ctypes.byref(out)))
        with self._table.lock:
            try:
                return self._table.objects[out.value]
            except KeyError:
                # Only a caller without a reference of its own can see this:
                # the object was finalized since tether_get returned.
                raise TetherError(Status.STALE, status_str(Status.STALE)) from None

    def count(self, h):
        """The calling thread's own count for ``h``."""
        out = ctypes.c_uint32()
        self._check(self._lib.tether_count(self._ptr(), h, ctypes.byref(out)))
        return out.value

    def pin(self, h):
        self._check(self._lib.tether_pin(self._ptr(), h))

    def unpin(self, h):
        self._check(self._lib.tether_unpin(self._ptr(), h))

    def transfer(self, h):
        """Moves one of the calling thread's references into a token (int)."""
        out = ctypes.c_uint64()
        self._check(self._lib.tether_transfer(self._ptr(), h, ctypes.byref(out)))
        return out.value

    def claim(self, token):
        """Claims a token on the calling thread; returns the handle."""
        out = ctypes.c_uint64()
        self._check(self._lib.tether_claim(self._ptr(), token, ctypes.byref(out)))
        return out.value

    def drop_transfer(self, token):
        """Gives up an unclaimed token (its reference is released)."""
        self._check(self._lib.tether_drop_transfer(self._ptr(), token))

    def pump(self):
        """Home thread: finalizes what other threads released last; returns
        how many. Call it from the home thread's loop."""
        return self._lib.tether_pump(self._ptr())

    def __len__(self):
        return self._lib.tether_len(self._ptr())

    def objects(self):
        """How many objects the wrapper's table keeps alive."""
        with self._table.lock:
            return len(self._table.objects)

    def free(self):
        """Frees the registry, once, when no other thread uses it any more
        (like C's free(): a call racing it is undefined behaviour). Objects
        still held are finalized now, on this thread; objects already queued
        to another living home thread are finalized there, later. Registries
        not freed are freed when garbage-collected (nobody can call them then)
        or at interpreter exit (atexit): free them yourself if daemon threads
        may still use them then."""
        if not getattr(self, "_reg", None):
            return
        reg, self._reg = self._reg, None
        _live.discard(self)
        self._lib.tether_registry_free(reg)
        with self._table.lock:
            self._table.freed = True
            empty = not self._table.objects
        if empty:
            with _tables_lock:
                _tables.pop(self._ctx, None)

    def __del__(self):
        # Unreachable, so no thread can be calling it: free() is safe here,
        # on whichever thread the garbage collector runs.
        try:
            self.free()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()
