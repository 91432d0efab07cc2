"""larder.diskcache: python-diskcache's Cache API on a larder store (docs/python.md, "Moving from
diskcache").

    import larder.diskcache as diskcache

    cache = diskcache.Cache("/var/cache/mytool")
    cache.set(("user", 42), {"name": "Ada"}, expire=300, tag="users")
    cache.get(("user", 42), expire_time=True, tag=True)

One store at exactly ``directory`` (larder's shared strategy: several processes use it at once,
one of them serving the others). Keys are any of diskcache's: str, bytes, int, float, and other
hashable values (tuples, None, ...). A str key is stored as it is, so C++ and cachectl read it
under the same name; other keys are encoded (msgpack for tuples, None, bool; a pickle signed with
the cache's key for anything else, never loaded unless its signature verifies). Values follow
larder.Cache's rules: no unsigned pickle is ever loaded. ``expire`` is diskcache's: None never
expires, seconds otherwise. ``tag`` is the larder category.

Implemented so far: Cache and FanoutCache with their whole key/value API, queues (push, pull,
peek, peekitem), transact, memoize, stats, settings, Disk/JSONDisk and custom Disk hooks, and
the recipes (larder/_recipes.py), Deque and Index (larder/_persistent.py). docs/python.md lists
every difference.

Thread-safety: a Cache may be used from many threads and processes at once.
"""

import base64
import fcntl
import functools
import hashlib
import io
import json
import os
import pickle
import tempfile
import threading
import time
import zlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import larder
from larder import _pack, _unpack

__all__ = [
    "Cache", "FanoutCache", "Disk", "JSONDisk", "Timeout", "EmptyDirWarning",
    "UnknownFileWarning", "ENOVAL", "UNKNOWN", "EVICTION_POLICY", "DEFAULT_SETTINGS",
    "Averager", "Lock", "RLock", "BoundedSemaphore", "throttle", "barrier", "memoize_stampede",
    "Deque", "Index",
]


class Constant(tuple):
    """A named constant (diskcache's ENOVAL, UNKNOWN)."""

    def __new__(cls, name: str) -> "Constant":
        return tuple.__new__(cls, (name,))

    def __repr__(self) -> str:
        return self[0]


ENOVAL = Constant("ENOVAL")
UNKNOWN = Constant("UNKNOWN")


class Timeout(Exception):
    """Raised by diskcache when its database is locked too long. larder never raises it: a call
    that cannot reach the store within ``timeout`` is a miss or a refused write."""


class EmptyDirWarning(UserWarning):
    """diskcache's warning for an empty directory found by check(); larder emits none."""


class UnknownFileWarning(UserWarning):
    """diskcache's warning for an unknown file found by check(); larder emits none."""


# diskcache's policies and what each is in larder.
EVICTION_POLICY = {
    "none": None,
    "least-recently-stored": "fifo",
    "least-recently-used": "lru",
    "least-frequently-used": "lfu",
}

DEFAULT_SETTINGS = {
    "statistics": 0,
    "tag_index": 0,
    "eviction_policy": "least-recently-stored",
    "size_limit": 2**30,
    "cull_limit": 10,
    "sqlite_auto_vacuum": 1,
    "sqlite_cache_size": 2**13,
    "sqlite_journal_mode": "wal",
    "sqlite_mmap_size": 2**26,
    "sqlite_synchronous": 1,
    "disk_min_file_size": 2**15,
    "disk_pickle_protocol": pickle.HIGHEST_PROTOCOL,
}


# diskcache's storage modes (Disk.store returns one, Disk.fetch takes it).
MODE_NONE = 0
MODE_RAW = 1
MODE_BINARY = 2
MODE_TEXT = 3
MODE_PICKLE = 4


class Disk:
    """diskcache's serialisation class, and its hooks: ``put(key) -> (db_key, raw)`` and
    ``get(db_key, raw) -> key`` for keys, ``store(value, read, key) -> (size, mode, filename,
    db_value)`` and ``fetch(mode, filename, db_value, read) -> value`` for values. A Cache
    given a subclass (``disk=``) runs every key and value through its hooks; the default one
    stores keys and values with larder's own codec (readable by C++ and cachectl). Nothing is
    written as a file: larder holds every value. A pickle made here is signed with the cache's
    key and loaded only when its signature verifies."""

    def __init__(self, directory: str, min_file_size: int = 0, pickle_protocol: int = 0,
                 **settings: Any) -> None:
        self._directory = directory
        self.min_file_size = min_file_size
        self.pickle_protocol = pickle_protocol or pickle.HIGHEST_PROTOCOL
        self._signer: Any = None  # the larder.diskcache.Cache using this Disk (it sets this)

    def _sign(self, obj: Any) -> bytes:
        if self._signer is None:
            raise TypeError("this Disk is not attached to a cache: it cannot sign a pickle")
        data = pickle.dumps(obj, protocol=self.pickle_protocol)
        return self._signer._cache._c.value_tag(data) + data

    def _unsign(self, raw: Any) -> Any:
        raw = bytes(raw)
        tag, data = raw[:32], raw[32:]
        if self._signer is None or len(raw) <= 32 or not self._signer._cache._c.value_tag_valid(
                data, tag):
            raise ValueError("a pickle whose signature does not verify")
        return pickle.loads(data)

    def hash(self, key: Any) -> int:
        """A hash of a key that is the same in every process."""
        db_key, _ = self.put(key)
        return zlib.adler32(repr(db_key).encode()) & 0xFFFFFFFF

    def put(self, key: Any) -> Tuple[Any, bool]:
        """(db_key, raw): str, bytes, int and float keys as they are (raw); others pickled."""
        t = type(key)
        if t is bytes or t is str or t is float or (t is int and -2**63 <= key < 2**63):
            return key, True
        return self._sign(key), False

    def get(self, key: Any, raw: bool) -> Any:
        """The key put() gave ``key`` for."""
        if raw:
            return bytes(key) if isinstance(key, (bytearray, memoryview)) else key
        return self._unsign(key)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Tuple[int, int, Any, Any]:
        """(size, mode, filename, db_value): bytes raw, str as text, numbers as they are, a
        file's bytes (read=True) binary, anything else pickled. filename is always None."""
        t = type(value)
        if read:
            data = value.read()
            return len(data), MODE_BINARY, None, data
        if t is bytes:
            return len(value), MODE_RAW, None, value
        if t is str:
            return len(value), MODE_TEXT, None, value
        if t is float or (t is int and -2**63 <= value < 2**63):
            return 0, MODE_RAW, None, value
        data = self._sign(value)
        return len(data), MODE_PICKLE, None, data

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
        """The value store() gave ``value`` for (a binary file of it with read=True)."""
        if mode == MODE_RAW:
            value = bytes(value) if isinstance(value, (bytearray, memoryview)) else value
            return io.BytesIO(value) if read and isinstance(value, bytes) else value
        if mode == MODE_BINARY:
            return io.BytesIO(bytes(value)) if read else bytes(value)
        if mode == MODE_TEXT:
            return value
        if mode == MODE_PICKLE:
            return self._unsign(value)
        raise ValueError(f"unknown storage mode {mode!r}")

    def filename(self, key: Any = UNKNOWN, value: Any = UNKNOWN) -> Tuple[str, str]:
        """diskcache names value files with it; larder writes none."""
        raise NotImplementedError("larder.diskcache stores every value in its store, not files")

    def remove(self, file_path: str) -> None:
        """Removes a value file (there are none)."""


class JSONDisk(Disk):
    """Keys and values as zlib-compressed JSON (``compress_level`` 0-9, the
    ``disk_compress_level`` setting)."""

    def __init__(self, directory: str, compress_level: int = 1, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.compress_level = compress_level

    def _pack(self, obj: Any) -> bytes:
        return zlib.compress(json.dumps(obj).encode("utf-8"), self.compress_level)

    @staticmethod
    def _unpack(data: bytes) -> Any:
        return json.loads(zlib.decompress(data).decode("utf-8"))

    def put(self, key: Any) -> Tuple[Any, bool]:
        return super().put(self._pack(key))

    def get(self, key: Any, raw: bool) -> Any:
        return self._unpack(super().get(key, raw))

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Tuple[int, int, Any, Any]:
        return super().store(value if read else self._pack(value), read, key=key)

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
        data = super().fetch(mode, filename, value, read)
        return data if read else self._unpack(data)


# ---- keys

_STR_ESCAPED = "\x00s"  # a str key that itself starts with NUL
_BYTES = "\x00b"        # bytes, as latin-1 text
_INT = "\x00i"          # decimal
_FLOAT = "\x00f"        # float.hex
_PACKED = "\x00m"       # msgpack (tuples, None, bool), base64
_PICKLED = "\x00p"      # HMAC tag + pickle, base64


_HOOKED = "\x00q"       # a custom Disk's non-raw db_key (bytes), base64
_HASHED = "\x00h"       # an encoding past larder's key limit: its SHA-256 (hex)
_FULL_KEY = "diskcache.key"  # metadata: a hashed key's encoding
_MAX_KEY_BYTES = 4096  # larder's kMaxKeyBytes (include/larder/larder.hpp)


class _Keys:
    """The key codec of one cache (it signs pickled keys with the cache's key). With a custom
    Disk, a key goes through its put()/get() first and the db_key it gives is stored."""

    def __init__(self, owner: "Cache", disk: Optional[Disk] = None) -> None:
        self._owner = owner
        self._disk = disk

    def encode(self, key: Any) -> str:
        """The key as stored. One whose encoding is longer than larder's key limit is stored
        under its SHA-256 (_HASHED), its encoding kept in the item's metadata (_FULL_KEY)."""
        full = self.full(key)
        if len(full) > _MAX_KEY_BYTES // 4:
            data = full.encode("utf-8", "surrogatepass")
            if len(data) > _MAX_KEY_BYTES:
                return _HASHED + hashlib.sha256(data).hexdigest()
        return full

    def metadata(self, key: Any, stored: str) -> Dict[str, str]:
        """What set() stores beside the item: its order, and a hashed key's encoding."""
        meta = _order()
        if stored.startswith(_HASHED):
            meta[_FULL_KEY] = self.full(key)
        return meta

    def full(self, key: Any) -> str:
        """The key's encoding, whatever its length."""
        if self._disk is None:
            return self._encode(key)
        db_key, raw = self._disk.put(key)
        if raw:
            return self._encode(bytes(db_key) if isinstance(db_key, (bytearray, memoryview))
                                else db_key)
        return _HOOKED + base64.b64encode(bytes(db_key)).decode("ascii")

    def decode(self, stored: str) -> Any:
        if stored.startswith(_HASHED):  # a long key: its encoding is in the item's metadata
            e = self._cache.metadata(stored)
            full = None if e is None else e.metadata.get(_FULL_KEY)
            if full is None or stored != self._hashed(full):
                return ENOVAL
            stored = full
        if self._disk is None:
            return self._decode(stored)
        try:
            if stored.startswith(_HOOKED):
                return self._disk.get(base64.b64decode(stored[2:], validate=True), False)
            db_key = self._decode(stored)
            return ENOVAL if db_key is ENOVAL else self._disk.get(db_key, True)
        except Exception:  # not written through this Disk: left out
            return ENOVAL

    @staticmethod
    def _hashed(full: str) -> str:
        return _HASHED + hashlib.sha256(full.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def _cache(self) -> larder.Cache:
        return self._owner._cache

    def _encode(self, key: Any) -> str:
        t = type(key)
        if t is str:
            return _STR_ESCAPED + key if key.startswith("\x00") else key
        if t is bytes:
            return _BYTES + key.decode("latin-1")
        if t is int:
            return _INT + str(key)
        if t is float:
            return _FLOAT + key.hex()
        try:
            return _PACKED + base64.b64encode(_pack(key)).decode("ascii")
        except (TypeError, ValueError, OverflowError, UnicodeError, RecursionError):
            pass
        data = pickle.dumps(key, protocol=pickle.HIGHEST_PROTOCOL)
        tag = self._cache._c.value_tag(data)
        return _PICKLED + base64.b64encode(tag + data).decode("ascii")

    def _decode(self, stored: str) -> Any:
        """The key, or ENOVAL for one that does not decode or whose signature does not verify
        (it is then left out of iteration)."""
        if not stored.startswith("\x00"):
            return stored
        kind, body = stored[:2], stored[2:]
        try:
            if kind == _STR_ESCAPED:
                return body
            if kind == _BYTES:
                return body.encode("latin-1")
            if kind == _INT:
                return int(body)
            if kind == _FLOAT:
                return float.fromhex(body)
            if kind == _PACKED:
                return _unpack(base64.b64decode(body, validate=True))
            if kind == _PICKLED:
                raw = base64.b64decode(body, validate=True)
                tag, data = raw[:32], raw[32:]
                if len(raw) > 32 and self._cache._c.value_tag_valid(data, tag):
                    return pickle.loads(data)
        except Exception:  # a key this codec did not write: left out
            pass
        return ENOVAL


def _tag_category(tag: Any) -> str:
    if tag is None:
        return ""
    if type(tag) is str:
        if tag.startswith("\x01") or "\x00" in tag:
            raise ValueError("tag: a str tag must not start with \\x01 nor hold NUL")
        return tag
    if type(tag) is int:
        return "\x01i" + str(tag)
    if type(tag) is float:
        return "\x01f" + tag.hex()
    if type(tag) is bytes:
        return "\x01b" + tag.decode("latin-1")
    raise TypeError(f"tag: expected str, bytes, int, float or None, got {type(tag).__name__}")


def _category_tag(category: str) -> Any:
    if category == "":
        return None
    if category.startswith("\x01"):
        kind, body = category[:2], category[2:]
        if kind == "\x01i":
            return int(body)
        if kind == "\x01f":
            return float.fromhex(body)
        if kind == "\x01b":
            return body.encode("latin-1")
    return category


def _store_limits(size_limit: Any, policy: Any) -> Dict[str, Any]:
    """larder's max_size and eviction_policy for diskcache's size_limit and eviction_policy."""
    if policy not in EVICTION_POLICY:
        raise ValueError(f"eviction_policy: one of {', '.join(EVICTION_POLICY)}, not {policy!r}")
    if isinstance(size_limit, bool) or not isinstance(size_limit, int) or size_limit < 0:
        raise ValueError(f"size_limit: a whole number of bytes, not {size_limit!r}")
    mapped = EVICTION_POLICY[policy]
    return {"max_size": 0 if mapped is None else size_limit,
            "eviction_policy": mapped or "lru"}


def _shaped(value: Any, when: Optional[float], tag: Any, expire_time: bool,
            want_tag: bool) -> Any:
    """The value, or (value, expire_time), (value, tag) or (value, expire_time, tag): what
    get() and its kin return for their expire_time and tag flags."""
    if expire_time and want_tag:
        return value, when, tag
    if expire_time:
        return value, when
    if want_tag:
        return value, tag
    return value


# ---- insertion order

_ORDER = "diskcache.order"  # metadata: when the item was stored, in ns (then a tie-breaker)
_order_lock = threading.Lock()
_order_last = 0


def _order() -> Dict[str, str]:
    """The metadata that places an item stored now after every item stored before it by this
    process (and, by the clock, by others)."""
    global _order_last
    with _order_lock:
        now = time.time_ns()
        _order_last = now if now > _order_last else _order_last + 1
        return {_ORDER: f"{_order_last:020d}"}


# ---- the cache

class Cache:
    """Disk-backed cache with diskcache's API. ``directory`` None: a new temporary directory.
    ``timeout`` bounds how long a call waits for another process (larder's lock_timeout, at
    least 1 s).
    ``settings``: any of DEFAULT_SETTINGS; ``size_limit`` (bytes) and ``eviction_policy`` take
    effect when the store is created; the others are kept as attributes."""

    def __init__(self, directory: Optional[str] = None, timeout: float = 60,
                 disk: type = Disk, **settings: Any) -> None:
        if not (isinstance(disk, type) and issubclass(disk, Disk)):
            raise TypeError(f"disk: a Disk class, not {disk!r}")
        unknown = {k for k in settings if k not in DEFAULT_SETTINGS and not k.startswith("disk_")}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        if directory is None:
            directory = tempfile.mkdtemp(prefix="diskcache-")
        directory = os.path.expanduser(os.fspath(directory))
        # As diskcache does, make the directory (and its parents). Made here, private (0700), it
        # is this user's: larder then takes it also inside a shared directory such as /tmp. One
        # that already exists is larder's to judge (another user's in /tmp is refused).
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise OSError(e.errno, f"cannot make the cache directory {directory}: "
                                   f"{e.strerror}") from e
        self._directory = directory
        self._timeout = timeout
        self._settings = dict(DEFAULT_SETTINGS, **settings)
        self._disk = disk(directory, **{k[5:]: v for k, v in self._settings.items()
                                        if k.startswith("disk_")})
        self._open_args = dict(
            strategy="shared", max_entries=0, default_ttl=0,
            lock_timeout=max(1.0, float(timeout or 0)),
            **_store_limits(self._settings["size_limit"], self._settings["eviction_policy"]))
        self._store: Optional[larder.Cache] = None
        self._store_lock = threading.Lock()
        self._disk._signer = self
        # A Disk subclass runs every key and value through its hooks; the default one is
        # larder's own codec.
        self._hooks: Optional[Disk] = None if type(self._disk) is Disk else self._disk
        self._keys = _Keys(self, self._hooks)
        self._stats_base: Optional[Tuple[int, int]] = (
            self._counts() if self._settings["statistics"] else None)
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fd: Optional[int] = None

    @property
    def _cache(self) -> larder.Cache:
        """The larder store, opened on first use (and again after close())."""
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = larder.Cache(self._directory, **self._open_args)
                store = self._store
        return store

    # ---- attributes

    @property
    def directory(self) -> str:
        """The cache's directory."""
        return self._directory

    @property
    def timeout(self) -> float:
        """Seconds a call waits for another process."""
        return self._timeout

    @property
    def disk(self) -> Disk:
        """The Disk instance (its settings only: larder serialises itself)."""
        return self._disk

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("_settings")
        if settings is not None and name in settings:
            return settings[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        # cache.size_limit = ... is reset("size_limit", ...), as in diskcache.
        if name in DEFAULT_SETTINGS or name.startswith("disk_"):
            self.reset(name, value)
        else:
            object.__setattr__(self, name, value)

    def reset(self, key: str, value: Any = ENOVAL, update: bool = True) -> Any:
        """A setting's value; with ``value``, sets it and returns it. A new size_limit or
        eviction_policy applies from the next call on: this handle reopens the store with it
        (larder's limits are those of the process serving the store, so with several processes
        on one directory, the serving one's)."""
        if key not in self._settings and not key.startswith("disk_"):
            raise ValueError(f"unknown setting {key!r}")
        if value is not ENOVAL and update:
            if key in ("size_limit", "eviction_policy"):
                self._open_args.update(_store_limits(
                    value if key == "size_limit" else self._settings["size_limit"],
                    value if key == "eviction_policy" else self._settings["eviction_policy"]))
                self.close()  # the next call opens the store with them
            self._settings[key] = value
            if key.startswith("disk_"):
                setattr(self._disk, key[5:], value)
            if key == "statistics":
                self._stats_base = self._counts() if value else None
        return self._settings.get(key)

    # ---- writes

    def _ttl(self, expire: Optional[float]) -> Optional[float]:
        """larder's TTL for diskcache's expire: None never (0), else seconds; None when the
        item would be expired at once (expire <= 0)."""
        if expire is None:
            return 0
        if isinstance(expire, bool) or not isinstance(expire, (int, float)):
            raise TypeError(f"expire: expected seconds, got {type(expire).__name__}")
        return None if expire <= 0 else float(expire)

    def _value(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
        """What larder stores for ``value``: itself (a file's bytes with read=True), or with a
        custom Disk ("larder.disk", mode, db_value) from its store()."""
        if self._hooks is None:
            return value.read() if read else value
        _, mode, filename, db_value = self._hooks.store(value, read, key=key)
        if filename is not None:  # a Disk that wrote a file after all: keep its bytes
            path = os.path.join(self._directory, filename)
            with open(path, "rb") as f:
                db_value, mode = f.read(), MODE_BINARY
            os.remove(path)
        if isinstance(db_value, (bytearray, memoryview)):
            db_value = bytes(db_value)
        return ("larder.disk", mode, db_value)

    def _fetched(self, stored: Any, read: bool) -> Any:
        """The value for what larder holds; ENOVAL when a custom Disk cannot fetch it."""
        if self._hooks is None:
            return io.BytesIO(stored) if read else stored
        if not (type(stored) is tuple and len(stored) == 3 and stored[0] == "larder.disk"):
            return stored  # stored without this Disk
        try:
            return self._hooks.fetch(stored[1], None, stored[2], read)
        except Exception:  # e.g. a pickle whose signature does not verify: a miss
            return ENOVAL

    def set(self, key: Any, value: Any, expire: Optional[float] = None, read: bool = False,
            tag: Any = None, retry: bool = False) -> bool:
        """Stores ``value`` under ``key``; True. read=True: ``value`` is a binary file to read.
        An ``expire`` of 0 or less stores an item that is already expired (nothing is kept)."""
        k = self._keys.encode(key)
        ttl = self._ttl(expire)
        category = _tag_category(tag)
        value = self._value(value, read, key)
        if ttl is None:
            self._cache.delete(k)
            return True
        if not self._cache.set(k, value, expire=ttl, category=category,
                               metadata=self._keys.metadata(key, k)):
            raise ValueError(f"the cache refused to store {key!r} "
                             f"({self._cache.last_error or 'refused'})")
        return True

    def __setitem__(self, key: Any, value: Any) -> None:
        self.set(key, value)

    def add(self, key: Any, value: Any, expire: Optional[float] = None, read: bool = False,
            tag: Any = None, retry: bool = False) -> bool:
        """set() only when no unexpired item has ``key`` (atomic, also across processes); True
        when stored."""
        ttl = self._ttl(expire)
        if ttl is None:
            return key not in self
        k = self._keys.encode(key)
        return self._cache.add(k, self._value(value, read, key), expire=ttl,
                               category=_tag_category(tag), metadata=self._keys.metadata(key, k))

    def touch(self, key: Any, expire: Optional[float] = None, retry: bool = False) -> bool:
        """Gives an unexpired item a new expiry (None: never); True when there was one."""
        ttl = self._ttl(expire)
        k = self._keys.encode(key)
        if ttl is None:
            return self._cache.delete(k)
        return self._cache.touch(k, ttl)

    def incr(self, key: Any, delta: int = 1, default: Optional[int] = 0,
             retry: bool = False) -> int:
        """Adds ``delta`` to the number under ``key`` (stored by set() or incr()) and returns
        the sum; its expiry and tag stay. Atomic against every other writer, in this process or
        another: a compare-and-set, tried again when another write came between. A missing key
        starts from ``default``; KeyError when it is None."""
        k = self._keys.encode(key)
        while True:
            e = self._cache.get_entry(k)
            if e is None:
                if default is None:
                    raise KeyError(key)
                value = default + delta
                if self._cache.add(k, self._value(value, False, key), expire=0, category="",
                                   metadata=self._keys.metadata(key, k)):
                    return value
                continue  # another writer stored it first
            current = self._fetched(e.value, False)
            if current is ENOVAL:
                raise TypeError(f"the value under {key!r} cannot be read")
            value = current + delta
            ttl = 0.0 if e.expires_at is None else max(0.001, e.expires_at - time.time())
            kept = {n: v for n, v in e.metadata.items() if n != larder.KIND}
            if self._cache.compare_and_set(k, e.value, self._value(value, False, key),
                                           expire=ttl, category=e.category, metadata=kept):
                return value

    def decr(self, key: Any, delta: int = 1, default: Optional[int] = 0,
             retry: bool = False) -> int:
        """incr() of -delta."""
        return self.incr(key, -delta, default, retry)

    # ---- reads

    def get(self, key: Any, default: Any = None, read: bool = False, expire_time: bool = False,
            tag: bool = False, retry: bool = False) -> Any:
        """The value, or ``default``. read=True: a binary file of the (bytes) value.
        expire_time / tag: a tuple (value, expire_time, tag), expire_time an epoch float or None."""
        if not expire_time and not tag:
            value = self._cache.get(self._keys.encode(key), ENOVAL)
            value = ENOVAL if value is ENOVAL else self._fetched(value, read)
            return default if value is ENOVAL else value
        e = self._cache.get_entry(self._keys.encode(key))
        value = ENOVAL if e is None else self._fetched(e.value, read)
        if value is ENOVAL:
            value, when, t = default, None, None
        else:
            when, t = e.expires_at, _category_tag(e.category)
        return _shaped(value, when, t, expire_time, tag)

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, ENOVAL)
        if value is ENOVAL:
            raise KeyError(key)
        return value

    def read(self, key: Any, retry: bool = False) -> Any:
        """A binary file of the item's value; KeyError when there is none."""
        value = self.get(key, ENOVAL, read=True)
        if value is ENOVAL:
            raise KeyError(key)
        return value

    def __contains__(self, key: Any) -> bool:
        try:
            k = self._keys.encode(key)
        except Exception:
            return False
        return k in self._cache

    def pop(self, key: Any, default: Any = None, expire_time: bool = False, tag: bool = False,
            retry: bool = False) -> Any:
        """Removes the item and returns its value (with expire_time / tag as get()), or
        ``default``."""
        with self.transact():
            found = self.get(key, ENOVAL, expire_time=True, tag=True)
            if found[0] is not ENOVAL:
                self._cache.delete(self._keys.encode(key))
        value, when, t = found
        if value is ENOVAL:
            value, when, t = default, None, None
        return _shaped(value, when, t, expire_time, tag)

    def delete(self, key: Any, retry: bool = False) -> bool:
        """Removes the item; True when there was one."""
        return self._cache.delete(self._keys.encode(key))

    def __delitem__(self, key: Any, retry: bool = True) -> None:
        if not self.delete(key):
            raise KeyError(key)

    # ---- iteration (insertion order: the order of the items' creation times)

    def _ordered(self) -> List[Tuple[str, str]]:
        """(order, stored key) of every item, oldest first: the order set() recorded, else
        (a counter made by incr) the creation time."""
        out = []
        for k in self._cache.keys():
            e = self._cache.metadata(k)
            if e is not None:
                order = e.metadata.get(_ORDER) or f"{int(e.created_at * 1e9):020d}"
                out.append((order, k))
        out.sort()
        return out

    def _decoded(self, stored: List[str]) -> Iterator[Any]:
        for k in stored:
            key = self._keys.decode(k)
            if key is not ENOVAL:
                yield key

    def __iter__(self) -> Iterator[Any]:
        """The keys, oldest item first (expired items included until removed)."""
        return self._decoded([k for _, k in self._ordered()])

    def __reversed__(self) -> Iterator[Any]:
        """The keys, newest item first."""
        return self._decoded([k for _, k in reversed(self._ordered())])

    def iterkeys(self, reverse: bool = False) -> Iterator[Any]:
        """The keys in the store's key order (reversed with ``reverse``)."""
        keys = self._cache.keys()
        return self._decoded(list(reversed(keys)) if reverse else keys)

    def __len__(self) -> int:
        """Items stored (expired ones included until removed)."""
        return len(self._cache)

    # ---- maintenance

    def clear(self, retry: bool = False) -> int:
        """Removes every item; how many."""
        return self._cache.clear()

    def evict(self, tag: Any, retry: bool = False) -> int:
        """Removes the items tagged ``tag``; how many."""
        return self._cache.clear(_tag_category(tag))

    def expire(self, now: Optional[float] = None, retry: bool = False) -> int:
        """Removes expired items; how many. ``now`` is ignored: larder's clock decides."""
        return self._cache.cleanup()

    def cull(self, retry: bool = False) -> int:
        """Removes expired items (larder keeps size_limit on every write); how many."""
        return self._cache.cleanup()

    def check(self, fix: bool = False, retry: bool = False) -> List[str]:
        """Problems found: the store unusable (running on memory). larder checks its records
        when it opens a store (and `cachectl verify` checks them all)."""
        if self._cache.degraded:
            return [f"the store cannot be used: {self._cache.last_error}"]
        return []

    def volume(self) -> int:
        """Bytes the cache takes on disk."""
        total = 0
        for root, _, files in os.walk(self._directory):
            for f in files:
                try:
                    total += os.lstat(os.path.join(root, f)).st_size
                except OSError:
                    pass
        return total

    def _counts(self) -> Tuple[int, int]:
        s = self._cache.stats()
        return s.hit_count, s.miss_count

    def stats(self, enable: bool = True, reset: bool = False) -> Tuple[int, int]:
        """(hits, misses) since statistics were enabled (or last reset), counted by every
        process using the store; enable=False stops counting for this handle."""
        if self._stats_base is None:
            result = (0, 0)
        else:
            hits, misses = self._counts()
            result = (hits - self._stats_base[0], misses - self._stats_base[1])
        if reset or (enable and self._stats_base is None):
            self._stats_base = self._counts()
        if not enable:
            self._stats_base = None
        self._settings["statistics"] = int(bool(enable))
        return result

    # ---- transactions

    def transact(self, retry: bool = False) -> "_Transaction":
        """A context manager: the block runs as a critical section against every other
        transact() block (and pop and the queue calls) on this directory, in this process and
        in others (an flock). Reentrant within a thread."""
        return _Transaction(self)

    def _acquire(self) -> None:
        self._lock.acquire()
        if self._lock_depth == 0:
            try:
                self._cache  # opening the store makes the directory
                fd = os.open(os.path.join(self._directory, "diskcache.transact.lock"),
                             os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                self._lock.release()
                raise
            self._lock_fd = fd
        self._lock_depth += 1

    def _release(self) -> None:
        self._lock_depth -= 1
        if self._lock_depth == 0 and self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._lock.release()

    # ---- queues

    def _queue_keys(self, prefix: Optional[str]) -> List[Tuple[int, Any]]:
        out = []
        for k in self._cache.keys():
            key = self._keys.decode(k)
            if prefix is None:
                if type(key) is int:
                    out.append((key, key))
            elif type(key) is str and key.startswith(prefix + "-"):
                digits = key[len(prefix) + 1:]
                if len(digits) == 15 and digits.isdigit():
                    out.append((int(digits), key))
        out.sort()
        return out

    def push(self, value: Any, prefix: Optional[str] = None, side: str = "back",
             expire: Optional[float] = None, read: bool = False, tag: Any = None,
             retry: bool = False) -> Any:
        """Adds ``value`` at the back (or front) of the queue named ``prefix``; returns its key
        (an int, or "prefix-NNNNNNNNNNNNNNN")."""
        if side not in ("back", "front"):
            raise ValueError("side: 'back' or 'front'")
        with self.transact():
            items = self._queue_keys(prefix)
            if not items:
                n = 500_000_000_000_000
            else:
                n = items[-1][0] + 1 if side == "back" else items[0][0] - 1
            key = n if prefix is None else f"{prefix}-{n:015d}"
            self.set(key, value, expire=expire, read=read, tag=tag)
        return key

    def _take(self, prefix: Optional[str], default: Any, side: str, expire_time: bool,
              tag: bool, remove: bool) -> Any:
        if side not in ("back", "front"):
            raise ValueError("side: 'back' or 'front'")
        with self.transact():
            items = self._queue_keys(prefix)
            if side == "back":
                items.reverse()
            for _, key in items:
                value, when, t = self.get(key, ENOVAL, expire_time=True, tag=True)
                if value is ENOVAL:
                    continue  # expired
                if remove:
                    self.delete(key)
                return key, _shaped(value, when, t, expire_time, tag)
        return default

    def pull(self, prefix: Optional[str] = None, default: Any = (None, None),
             side: str = "front", expire_time: bool = False, tag: bool = False,
             retry: bool = False) -> Any:
        """Removes and returns (key, value) from the front (or back) of the queue; ``default``
        when it is empty."""
        return self._take(prefix, default, side, expire_time, tag, True)

    def peek(self, prefix: Optional[str] = None, default: Any = (None, None),
             side: str = "front", expire_time: bool = False, tag: bool = False,
             retry: bool = False) -> Any:
        """(key, value) at the front (or back) of the queue, not removed; ``default`` when it is
        empty."""
        return self._take(prefix, default, side, expire_time, tag, False)

    def peekitem(self, last: bool = True, expire_time: bool = False, tag: bool = False,
                 retry: bool = False) -> Tuple[Any, Any]:
        """(key, value) of the newest (or oldest) unexpired item; KeyError when there is none."""
        ordered = self._ordered()
        if last:
            ordered.reverse()
        for _, stored in ordered:
            key = self._keys.decode(stored)
            if key is ENOVAL:
                continue
            value, when, t = self.get(key, ENOVAL, expire_time=True, tag=True)
            if value is ENOVAL:
                continue
            return key, _shaped(value, when, t, expire_time, tag)
        raise KeyError("dictionary is empty")

    # ---- memoize

    def memoize(self, name: Optional[str] = None, typed: bool = False,
                expire: Optional[float] = None, tag: Any = None,
                ignore: Any = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator caching a function's results under (name or its full name, arguments);
        typed=True tells 1 and 1.0 apart; ``ignore``: argument positions or names left out of
        the key. The wrapper's ``__cache_key__(*args, **kwargs)`` gives an item's key."""
        if callable(name):
            raise TypeError("name cannot be callable: use @cache.memoize()")

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            base = (name or f"{fn.__module__}.{fn.__qualname__}",)

            def cache_key(*args: Any, **kwargs: Any) -> Tuple[Any, ...]:
                return _args_to_key(base, args, kwargs, typed, ignore)

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                key = cache_key(*args, **kwargs)
                result = self.get(key, ENOVAL, retry=True)
                if result is ENOVAL:
                    result = fn(*args, **kwargs)
                    if expire is None or expire > 0:
                        self.set(key, result, expire, tag=tag, retry=True)
                return result

            wrapper.__cache_key__ = cache_key  # type: ignore[attr-defined]
            return wrapper

        return decorator

    # ---- lifetime

    def close(self) -> None:
        """Lets go of the store: it closes (a shared store's owner hands it on) once no call in
        another thread still uses it; a later call reopens it. Safe while other threads call."""
        with self._store_lock:
            store, self._store = self._store, None
        if store is not None:
            store.flush()
        # The last reference goes with the last call using it: larder.Cache closes itself then.

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exception: Any) -> None:
        self.close()

    def __getstate__(self) -> Tuple[Any, ...]:
        return (self._directory, self._timeout, type(self._disk), self._settings)

    def __setstate__(self, state: Tuple[Any, ...]) -> None:
        directory, timeout, disk, settings = state
        self.__init__(directory, timeout, disk, **settings)


class _Transaction:
    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    def __enter__(self) -> Cache:
        self._cache._acquire()
        return self._cache

    def __exit__(self, *exc: Any) -> None:
        self._cache._release()


def _args_to_key(base: Tuple[Any, ...], args: Tuple[Any, ...], kwargs: Dict[str, Any],
                 typed: bool, ignore: Any) -> Tuple[Any, ...]:
    args = tuple(a for i, a in enumerate(args) if i not in ignore)
    key = base + args + (None,)
    items = sorted((k, v) for k, v in kwargs.items() if k not in ignore)
    for item in items:
        key += item
    if typed:
        key += tuple(type(a) for a in args)
        key += tuple(type(v) for _, v in items)
    return key


class FanoutCache(Cache):
    """diskcache's sharded cache. larder's store takes concurrent writers itself, so the shards
    are one store: ``shards`` is accepted and kept as an attribute."""

    def __init__(self, directory: Optional[str] = None, shards: int = 8, timeout: float = 0.010,
                 disk: type = Disk, **settings: Any) -> None:
        super().__init__(directory, timeout=timeout, disk=disk, **settings)
        self.shards = shards
        self._named: Dict[Tuple[str, str], Any] = {}

    def _sub(self, kind: str, name: str, make: Callable[[str], Any]) -> Any:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"name: slash-separated parts, none empty, '.' or '..': {name!r}")
        with self._store_lock:
            found = self._named.get((kind, name))
            if found is None:
                found = self._named[(kind, name)] = make(
                    os.path.join(self._directory, kind, *parts))
            return found

    def cache(self, name: str, timeout: float = 60, disk: Optional[type] = None) -> Cache:
        """A Cache of its own in ``directory/cache/name`` (the same object on each call)."""
        return self._sub("cache", name,
                         lambda d: Cache(d, timeout=timeout, disk=disk or type(self._disk)))

    def deque(self, name: str, maxlen: Optional[int] = None) -> Any:
        """A Deque in ``directory/deque/name``."""
        return self._sub("deque", name, lambda d: Deque(directory=d, maxlen=maxlen))

    def index(self, name: str) -> Any:
        """An Index in ``directory/index/name``."""
        return self._sub("index", name, lambda d: Index(d))


from larder._persistent import Deque, Index  # noqa: E402  (they use Cache's API only)
from larder._recipes import (  # noqa: E402
    Averager, BoundedSemaphore, Lock, RLock, barrier, memoize_stampede, throttle)
