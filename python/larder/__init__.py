"""larder: an embedded, persistent key-value cache (RocksDB underneath), shared safely by the
processes of one machine.

    import larder
    c = larder.Cache("/tmp/my-cache")
    c.set("answer", {"value": 42}, expire=3600)
    c.get("answer")            # {'value': 42}

    @c.memoize(expire=600)
    def slow(x): ...

Values: ``bytes`` are stored as they are (C++ programs and ``cachectl get --raw`` read the same
bytes), ``str`` as UTF-8; ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes`` and lists,
tuples and dicts of them in msgpack (no code runs to load them; a tuple stays a tuple); anything
else with pickle, signed with HMAC-SHA256: a pickle is loaded only when its tag verifies with a
key this cache trusts (its own key in the cache root, or the remote's ``secret_file``), so what a
cache holds never runs code (docs/python.md, "Security"). ``get`` returns the type that was set.
The kind is kept in the entry's metadata under ``larder.kind`` (absent for bytes).

Reads never raise for I/O trouble: a failing store degrades to misses (see ``degraded`` and
``last_error``). Bad arguments raise ``ValueError`` (``ConfigError`` for the configuration)
naming the field. Every call releases the GIL while it runs in C++.
"""

from __future__ import annotations

import functools
import os
import pickle
import threading

import msgpack
import weakref
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from . import _larder
from ._larder import ConfigError, ManualClock

__all__ = ["Cache", "CacheKey", "ConfigError", "Entry", "ManualClock", "Stats", "global_cache"]

KIND = "larder.kind"  # metadata key recording how a value was encoded
_MISSING = object()

Key = Union[str, bytes]


def _key(key: Key) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key).decode("utf-8", "surrogateescape")
    raise TypeError(f"key: expected str or bytes, got {type(key).__name__}")


# msgpack extension types: a tuple (its items as a msgpack array) and an int beyond 64 bits
# (decimal text). Nothing else is accepted on decoding.
_EXT_TUPLE = 1
_EXT_BIGINT = 2
_MAX_BIGINT_DIGITS = 4300  # Python's own limit on int <-> str conversions

KIND_MSGPACK = "msgpack"
KIND_SIGNED_PICKLE = "pickle+hmac"
KIND_UNSIGNED_PICKLE = "pickle"  # written by larder before signing: never loaded
_TAG_BYTES = 32


def _msgpack_default(o: Any) -> Any:
    if type(o) is tuple:
        return msgpack.ExtType(_EXT_TUPLE, _pack(list(o)))
    if type(o) is int:  # beyond 64 bits
        return msgpack.ExtType(_EXT_BIGINT, str(o).encode("ascii"))
    raise TypeError(f"{type(o).__name__} is not one of the safe kinds")


def _pack(value: Any) -> bytes:
    """msgpack of a value made only of the safe kinds; TypeError/ValueError otherwise (a subclass
    of a safe kind is not safe: it is pickled, so it comes back as itself)."""
    return msgpack.packb(value, use_bin_type=True, strict_types=True, default=_msgpack_default)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_TUPLE:
        items = _unpack(data)
        if type(items) is not list:
            raise ValueError("a tuple extension that does not hold an array")
        return tuple(items)
    if code == _EXT_BIGINT:
        if len(data) > _MAX_BIGINT_DIGITS + 1:
            raise ValueError("an integer extension too long")
        return int(data.decode("ascii"))
    raise ValueError(f"unknown msgpack extension type {code}")


def _unpack(raw: bytes) -> Any:
    # msgpack bounds every length by the bytes given (max_*_len default to len(raw)) and runs no
    # code but _ext_hook's.
    return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=False,
                           ext_hook=_ext_hook)


def _is_bytes(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview))


def _expire(expire: Optional[float]) -> Optional[float]:
    if expire is None:
        return None
    if isinstance(expire, bool) or not isinstance(expire, (int, float)):
        raise TypeError(f"expire: expected seconds (int or float), got {type(expire).__name__}")
    if expire < 0:
        raise ValueError(f"expire: must not be negative (got {expire})")
    return float(expire)


def _metadata(metadata: Optional[Mapping[str, str]], kind: Optional[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("metadata: keys and values must be str")
            if k == KIND:
                raise ValueError(f"metadata: {KIND!r} is reserved")
            out[k] = v
    if kind is not None:
        out[KIND] = kind
    return out


class Entry:
    """A stored entry: its value and what larder knows of it."""

    __slots__ = ("value", "status", "category", "size", "created_at", "last_accessed",
                 "expires_at", "access_count", "metadata", "key")

    def __init__(self, data: Any, value: Any) -> None:
        meta = dict(data.metadata)
        meta.pop(KIND, None)
        self.key: str = data.key
        self.value: Any = value
        self.status: str = data.status  # "fresh", "stale", "expired" or "invalid"
        self.category: str = data.category
        self.size: int = data.size  # bytes as stored
        self.created_at: float = data.created_at  # seconds since the epoch
        self.last_accessed: float = data.last_accessed
        self.expires_at: Optional[float] = data.expires_at  # None: never expires
        self.access_count: int = data.access_count
        self.metadata: Dict[str, str] = meta

    def __repr__(self) -> str:
        return (f"Entry(key={self.key!r}, status={self.status!r}, category={self.category!r}, "
                f"size={self.size})")


class Stats:
    """Counters and totals: the C++ ``larder::Stats`` fields by the same names."""

    def __init__(self, d: Dict[str, Any]) -> None:
        self.__dict__.update(d)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Stats(hit_count={self.hit_count}, miss_count={self.miss_count}, " \
               f"total_entries={self.total_entries})"


class CacheKey:
    """Stable keys built from parts, as ``larder::CacheKey`` builds them in C++."""

    @staticmethod
    def from_parts(*parts: Any) -> str:
        """Parts joined with ':' (':' and '\\' inside a part escaped): works with patterns."""
        return _larder.key_from_parts([str(p) for p in parts])

    @staticmethod
    def from_map(fields: Mapping[str, Any]) -> str:
        """"k=v&k=v" in key order: independent of insertion order."""
        return _larder.key_from_map({str(k): str(v) for k, v in fields.items()})

    @staticmethod
    def from_path(path: Union[str, os.PathLike]) -> str:
        """A key that changes when the file's size or mtime changes."""
        return _larder.key_from_path(os.fspath(path))


_open_caches: "weakref.WeakSet[Cache]" = weakref.WeakSet()
_abandoned: List[Any] = []  # C++ caches of a parent process, kept alive (never closed) in a child


def _after_fork_in_child() -> None:
    # The parent's store, locks and threads belong to the parent: leave them alone and reopen
    # lazily with the same configuration on the next call.
    for cache in list(_open_caches):
        cache._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Cache:
    """A persistent cache in ``directory`` (None: the per-user default root).

    strategy: "process_isolated" (default: each process its own store, a gone process's store
    adopted by the next), "shared" (one store for every process, served by an elected owner) or
    "disabled" (memory only). max_size is in bytes (0: unlimited), default_ttl and
    cleanup_interval in seconds (0: never), lock_timeout in seconds. clock: a ManualClock for
    tests. log: a callable(level, message) receiving the cache's log lines (with the GIL held).
    read_only: open an existing shared store for inspection (reads work, writes return False,
    nothing on disk changes; also beside a live owner). remote: a Redis URL
    ("redis://host:6379?prefix=team", docs/remote.md) for a remote tier shared with caches on
    other machines ("": none).
    """

    def __init__(self, directory: Union[None, str, os.PathLike] = None, *,
                 strategy: str = "process_isolated", max_entries: int = 10_000,
                 max_size: int = 500 * 2**20, default_ttl: float = 86400,
                 eviction_policy: str = "lru", cleanup_interval: float = 300,
                 lock_timeout: float = 5.0, stale_factor: float = 2.0,
                 statistics: bool = True, clock: Optional[ManualClock] = None,
                 log: Optional[Callable[[str, str], None]] = None,
                 read_only: bool = False, remote: str = "") -> None:
        for name, v in (("max_entries", max_entries), ("max_size", max_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name}: expected a whole number >= 0, got {v!r}")
        for name, v in (("default_ttl", default_ttl), ("cleanup_interval", cleanup_interval),
                        ("lock_timeout", lock_timeout), ("stale_factor", stale_factor)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{name}: expected a number, got {v!r}")
        self._args = dict(
            directory=None if directory is None else os.fspath(directory), strategy=strategy,
            max_entries=max_entries, max_size=max_size, default_ttl=float(default_ttl),
            eviction_policy=eviction_policy, cleanup_interval=float(cleanup_interval),
            lock_timeout=float(lock_timeout), stale_factor=float(stale_factor),
            statistics=bool(statistics), clock=clock, log=log, read_only=bool(read_only),
            remote=str(remote))
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._impl = _larder.Cache(**self._args)
        self._flights: Dict[str, "_Flight"] = {}
        _open_caches.add(self)

    # ---- lifetime

    def _forked(self) -> None:
        if self._impl is not None and self._pid != os.getpid():
            self._impl.abandon()
            _abandoned.append(self._impl)
            self._impl = None
            self._flights = {}
            self._lock = threading.Lock()

    @property
    def _c(self) -> Any:
        impl = self._impl
        if impl is not None and self._pid == os.getpid():
            return impl
        if self._closed:
            raise ValueError("the cache is closed")
        with self._lock:
            if self._pid != os.getpid():  # forked without the hook (e.g. os.fork in C)
                self._forked()
                self._pid = os.getpid()
            if self._impl is None:
                self._impl = _larder.Cache(**self._args)
            return self._impl

    def close(self) -> None:
        """Flushes and closes the cache; further calls raise ValueError."""
        self._closed = True
        impl, self._impl = self._impl, None
        if impl is not None and self._pid == os.getpid():
            impl.close()

    def flush(self) -> None:
        """Writes statistics and buffered access data now."""
        self._c.flush()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ---- reads and writes

    def set(self, key: Key, value: Any, *, expire: Optional[float] = None,
            category: str = "default", metadata: Optional[Mapping[str, str]] = None) -> bool:
        """Stores ``value``; expire in seconds (None: the default TTL, 0: never). True when
        stored; False when refused (bad key or category, too large, storage failure)."""
        raw, kind = self._encode(value)
        return self._c.set(_key(key), raw, _expire(expire), category, _metadata(metadata, kind))

    def get(self, key: Key, default: Any = None, *, include_stale: bool = False) -> Any:
        """The value as it was set, or ``default`` when there is no fresh entry (or a stale
        one with include_stale, or a value that is not trusted: see "Security")."""
        k = _key(key)
        found = self._c.get_value(k, include_stale, KIND)
        if found is None:
            return default
        value = self._decode(k, found[0], found[1])
        return default if value is _MISSING else value

    def get_entry(self, key: Key, *, include_stale: bool = False) -> Optional[Entry]:
        """The entry with its status, timestamps and metadata; None on a miss (or a value that
        is not trusted)."""
        k = _key(key)
        data = self._c.get_entry(k, include_stale)
        if data is None:
            return None
        value = self._decode(k, data.value, dict(data.metadata).get(KIND))
        return None if value is _MISSING else Entry(data, value)

    # ---- values

    def _encode(self, value: Any) -> Tuple[bytes, Optional[str]]:
        if _is_bytes(value):
            return bytes(value), None
        if isinstance(value, str):
            return value.encode("utf-8", "surrogatepass"), "str"
        try:
            return _pack(value), KIND_MSGPACK
        except (TypeError, ValueError, OverflowError, UnicodeError, RecursionError):
            pass
        return self._signed_pickle(value)

    def _signed_pickle(self, value: Any) -> Tuple[bytes, str]:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return self._c.value_tag(data) + data, KIND_SIGNED_PICKLE

    def _decode(self, key: str, raw: bytes, kind: Optional[str]) -> Any:
        """The value, or _MISSING (counted in error_count, logged once per cache) when the bytes
        are not trusted or do not decode. Never raises for what the cache holds."""
        if kind is None:
            return raw
        if kind == "str":
            try:
                return raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                return self._untrusted(key, "a str value that is not UTF-8")
        if kind == KIND_MSGPACK:
            try:
                return _unpack(raw)
            except Exception as e:  # malformed bytes: any failure of the decoder is a miss
                return self._untrusted(key, f"a msgpack value that does not decode ({e})")
        if kind == KIND_SIGNED_PICKLE:
            data, tag = raw[_TAG_BYTES:], raw[:_TAG_BYTES]
            if len(raw) < _TAG_BYTES or not self._c.value_tag_valid(data, tag):
                return self._untrusted(
                    key, "a pickle whose HMAC-SHA256 tag does not verify with a key this cache "
                         "trusts (written by another machine or planted)")
            try:
                return pickle.loads(data)
            except Exception as e:  # signed by us, but e.g. its class is gone
                return self._untrusted(key, f"a signed pickle that does not load ({e!r})")
        if kind == KIND_UNSIGNED_PICKLE:
            return self._untrusted(key, "an unsigned pickle (written by an older larder, or "
                                        "planted)")
        if kind == "int":  # a counter written by incr (decimal text)
            try:
                return int(raw)
            except ValueError:
                return self._untrusted(key, "a counter that is not a decimal integer")
        return self._untrusted(key, f"a value of unknown kind {kind!r}")

    def _untrusted(self, key: str, why: str) -> Any:
        self._c.report_untrusted_value(key, why)
        return _MISSING

    def get_many(self, keys: Iterable[Key]) -> List[Any]:
        """get() of every key, in order (None for a miss)."""
        return [self.get(k) for k in keys]

    def set_many(self, items: Union[Mapping[Key, Any], Iterable[Tuple[Key, Any]]], *,
                 expire: Optional[float] = None, category: str = "default") -> List[bool]:
        """set() of every (key, value) with the same options, in order."""
        pairs = items.items() if isinstance(items, Mapping) else items
        ttl = _expire(expire)
        by_kind: Dict[Optional[str], List[Tuple[int, str, bytes]]] = {}
        count = 0
        for i, (k, v) in enumerate(pairs):
            raw, kind = self._encode(v)
            by_kind.setdefault(kind, []).append((i, _key(k), raw))
            count = i + 1
        out = [False] * count
        for kind, group in by_kind.items():
            stored = self._c.set_many([(k, raw) for _, k, raw in group], ttl, category,
                                      _metadata(None, kind))
            for (i, _, _), ok in zip(group, stored):
                out[i] = ok
        return out

    def add(self, key: Key, value: Any, *, expire: Optional[float] = None,
            category: str = "default", metadata: Optional[Mapping[str, str]] = None) -> bool:
        """Stores ``value`` only if no fresh entry is stored under ``key`` (atomic, also across
        processes). True when stored; False when a fresh entry exists or set() would refuse."""
        raw, kind = self._encode(value)
        return self._c.add(_key(key), raw, _expire(expire), category, _metadata(metadata, kind))

    def touch(self, key: Key, expire: Optional[float] = None) -> bool:
        """Gives the fresh entry a new lifetime of ``expire`` seconds from now (None: the
        default TTL, 0: never expires), keeping its value. False when there is no fresh entry."""
        ttl = _expire(expire)
        return self._c.touch(_key(key), self._args["default_ttl"] if ttl is None else ttl)

    def compare_and_set(self, key: Key, expected: Any, value: Any, *,
                        expire: Optional[float] = None, category: str = "default",
                        metadata: Optional[Mapping[str, str]] = None) -> bool:
        """Stores ``value`` (as set() would) only if the fresh stored value is ``expected``, in
        one atomic step (also across processes, and across machines with a remote tier). The
        stored value is compared by its encoding: the values msgpack carries (None, bool, int,
        float, str, bytes, and lists, tuples and dicts of them, dict order included) compare
        exactly, a counter written by incr() compares with its int, other objects compare by
        their pickle. False when nothing fresh is stored, the value differs, or set() would
        refuse."""
        raw, kind = self._encode(value)
        meta = _metadata(metadata, kind)
        ttl = _expire(expire)
        k = _key(key)
        expected_raw, _ = self._encode(expected)
        if self._c.compare_and_set(k, expected_raw, raw, ttl, category, meta):
            return True
        if isinstance(expected, int) and not isinstance(expected, bool):  # an incr() counter
            return self._c.compare_and_set(k, str(expected).encode(), raw, ttl, category, meta)
        return False

    def get_and_touch(self, key: Key, expire: Optional[float] = None, default: Any = None) -> Any:
        """get() and touch() in one atomic step: the fresh value, whose entry now lives
        ``expire`` seconds from now (None: the default TTL, 0: never expires); ``default`` on a
        miss. Counted as a hit or a miss like get()."""
        ttl = _expire(expire)
        k = _key(key)
        found = self._c.get_and_touch(k, self._args["default_ttl"] if ttl is None else ttl, KIND)
        if found is None:
            return default
        value = self._decode(k, found[0], found[1])
        return default if value is _MISSING else value

    def incr(self, key: Key, delta: int = 1, *, expire: Optional[float] = None,
             category: str = "default") -> Optional[int]:
        """Adds ``delta`` to the integer counter under ``key`` and returns the sum (atomic, also
        across processes). A missing key counts as 0 and is created with ``expire`` and
        ``category``. None when the stored value is not an integer or the sum overflows 64 bits.
        get() returns the counter as an int."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta: expected an int, got {type(delta).__name__}")
        if not -2**63 <= delta < 2**63:
            raise ValueError("delta: must fit in 64 bits")
        return self._c.incr(_key(key), delta, _expire(expire), category, _metadata(None, "int"))

    def set_all(self, items: Union[Mapping[Key, Any], Iterable[Tuple[Key, Any]]], *,
                expire: Optional[float] = None, category: str = "default") -> bool:
        """Stores every (key, value) in one batch, or none (atomic): True when all were stored;
        False, storing nothing, when any would be refused or the limits cannot hold them all."""
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        encoded = [(_key(k), self._encode(v)) for k, v in pairs]
        kinds = {kind for _, (_, kind) in encoded}
        if len(kinds) > 1:  # one batch carries one kind: sign and pickle them all
            encoded = [(_key(k), self._signed_pickle(v)) for k, v in pairs]
            kinds = {KIND_SIGNED_PICKLE}
        kind = next(iter(kinds)) if kinds else None
        return self._c.set_all([(k, raw) for k, (raw, _) in encoded], _expire(expire), category,
                               _metadata(None, kind))

    def delete(self, key: Key) -> bool:
        """Removes the entry; True if it was stored."""
        return self._c.remove(_key(key))

    def invalidate(self, key: Key) -> bool:
        """Marks the entry invalid until it is set again; True if a valid entry was marked."""
        return self._c.invalidate(_key(key))

    def invalidate_category(self, name: str) -> int:
        """Marks every entry of the category invalid; returns how many."""
        return self._c.invalidate_category(name)

    def invalidate_pattern(self, glob: str) -> int:
        """Marks every entry whose key matches the glob ('*', '?', '[...]') invalid."""
        if not glob:
            raise ValueError("pattern: must not be empty")
        return self._c.invalidate_pattern(glob)

    def clear(self, category: Optional[str] = None) -> int:
        """Removes every entry (or every entry of ``category``); returns how many."""
        return self._c.clear() if category is None else self._c.clear_category(category)

    def cleanup(self) -> int:
        """Removes expired and invalid entries; returns how many."""
        return self._c.cleanup()

    def keys(self, category: Optional[str] = None) -> List[str]:
        """Stored keys (any status), in key order."""
        return self._c.keys() if category is None else self._c.keys_in_category(category)

    def stats(self) -> Stats:
        """Counters of every process using the directory, and the store's totals now."""
        return Stats(self._c.stats())

    def metadata(self, key: Key) -> Optional[Entry]:
        """The info of a stored entry of any status (its value is not read: Entry.value is
        empty); records no access and counts nothing. None when nothing is stored."""
        data = self._c.metadata(_key(key))
        return None if data is None else Entry(data, b"")

    @property
    def degraded(self) -> bool:
        """True while the cache runs on memory because its store cannot be used."""
        return self._c.degraded

    @property
    def last_error(self) -> str:
        """The last failure the cache met (empty when none): why it is degraded, a refused
        write, an owner that did not answer."""
        return self._c.last_error

    @property
    def directory(self) -> Optional[str]:
        """The directory holding this cache's store (process_isolated: <root>/proc_<pid>);
        None for the disabled strategy."""
        d = str(self._c.directory)
        return d or None

    # ---- the mapping protocol

    def __setitem__(self, key: Key, value: Any) -> None:
        """set() with the defaults; raises ValueError when the cache refuses the value."""
        if not self.set(key, value):
            raise ValueError(f"the cache refused to store {key!r} ({self.last_error or 'refused'})")

    def __getitem__(self, key: Key) -> Any:
        """The fresh value; KeyError on a miss."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __delitem__(self, key: Key) -> None:
        """Removes the entry; KeyError if nothing was stored."""
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        """True if a fresh entry is stored (records no access)."""
        if not isinstance(key, (str, bytes)):
            return False
        return self._c.exists(_key(key))

    def __len__(self) -> int:
        """Entries stored now, of any status."""
        return int(self._c.stats()["total_entries"])

    def __iter__(self) -> Iterator[str]:
        """The stored keys, in key order (a snapshot)."""
        return iter(self.keys())

    # ---- memoize

    def memoize(self, expire: Optional[float] = None, category: str = "default",
                name: Optional[str] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator caching a function's results. The key is the function's qualified name
        (or ``name``) and its arguments (pickled); concurrent callers in this process for one
        key compute once. An exception is passed to every waiting caller and not cached."""
        ttl = _expire(expire)

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            base = name or f"{fn.__module__}.{fn.__qualname__}"

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                key = CacheKey.from_parts("memoize", base, _argument_key(args, kwargs))
                hit = self.get(key, _MISSING)
                if hit is not _MISSING:
                    return hit[0]
                return self._single_flight(key, lambda: fn(*args, **kwargs), ttl, category)

            wrapper.cache_key = lambda *a, **kw: CacheKey.from_parts(  # type: ignore[attr-defined]
                "memoize", base, _argument_key(a, kw))
            return wrapper

        return decorator

    def _single_flight(self, key: str, compute: Callable[[], Any], ttl: Optional[float],
                       category: str) -> Any:
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not leader:
            return flight.wait()
        try:
            hit = self.get(key, _MISSING)  # another process may have stored it meanwhile
            value = hit[0] if hit is not _MISSING else compute()
            if hit is _MISSING:
                self.set(key, (value,), expire=ttl, category=category)
            flight.finish(value, None)
            return value
        except BaseException as e:
            flight.finish(None, e)
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)


def _argument_key(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
    import hashlib
    blob = pickle.dumps((args, sorted(kwargs.items())), protocol=4)
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


class _Flight:
    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: Any = None
        self._error: Optional[BaseException] = None

    def finish(self, value: Any, error: Optional[BaseException]) -> None:
        self._value, self._error = value, error
        self._done.set()

    def wait(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


_global: Optional[Cache] = None
_global_lock = threading.Lock()


def global_cache() -> Cache:
    """The process-wide cache, configured from the LARDER_* variables exactly as C++'s
    ``Config::from_env`` reads them (opened on first use). Raises ConfigError naming a bad
    variable; a later call tries again."""
    global _global
    with _global_lock:
        if _global is None:
            _global = Cache(**_larder.env_config())
        return _global
