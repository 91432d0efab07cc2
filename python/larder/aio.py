"""larder.aio: the larder.Cache API as coroutines, for asyncio programs (docs/python.md, "asyncio").

    import larder.aio

    async def main():
        async with larder.aio.Cache("/var/cache/mytool", strategy="shared") as cache:
            await cache.set("k", {"a": 1}, expire=60)
            print(await cache.get("k"))

            @cache.memoize(expire=300)
            async def fetch(url):
                ...

Every call runs on a bounded pool of threads of the cache's own (``max_workers``), never on the
event loop; results go back to the loop in bursts (one wake-up for the results ready together): a call that waits -- a shared cache's owner that is slow or stopped, a remote tier
timing out, a store opening -- holds one of those threads while the loop's other tasks keep
running. The native calls release the GIL while they wait. Values, keys, TTLs and errors are
larder.Cache's: the same store, readable by larder.Cache, C++ and cachectl alike.

Thread-safety: a Cache may be used from several event loops and threads; memoize's single flight
is per event loop.
"""

import asyncio
import collections
import functools
import queue
import threading
import weakref
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, TypeVar

import larder
from larder import CacheKey, _argument_key, _expire

__all__ = ["Cache"]

_MISSING = object()
T = TypeVar("T")

# The larder.Cache methods that become coroutines of the same name and arguments.
_METHODS = (
    "get", "set", "get_entry", "get_many", "set_many", "add", "touch", "compare_and_set",
    "get_and_touch", "incr", "set_all", "delete", "invalidate", "invalidate_category",
    "invalidate_pattern", "clear", "cleanup", "keys", "stats", "metadata", "flush",
)


class Cache:
    """A larder cache whose calls are coroutines. Takes larder.Cache's arguments (``directory``
    and the keyword options) plus ``max_workers``: the threads that run its calls (default 8;
    more calls than that wait their turn without blocking the event loop).

    The store opens on the pool at the first call (or at ``async with`` / ``await open()``), so
    a bad option raises there, as larder.ConfigError. ``close()`` closes it; calls after that
    raise ValueError.
    """

    def __init__(self, directory: Any = None, *, max_workers: int = 8, **options: Any) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise larder.ConfigError(f"max_workers: expected a whole number >= 1, got "
                                     f"{max_workers!r}")
        self._directory = directory
        self._options = options
        self._pool = _Pool(max_workers)
        self._lock = threading.Lock()
        self._cache: Optional[larder.Cache] = None
        self._closed = False
        # memoize's flights: key -> the leader's computation, per event loop.
        self._flights: Dict[Any, Dict[str, _Flight]] = {}
        # Set (and dropped) when a flight starts or gains a follower: what _await_followers
        # waits on, per event loop.
        self._flight_events: Dict[Any, asyncio.Event] = {}

    # ---- lifetime

    def _open_sync(self) -> larder.Cache:
        if self._cache is not None and not self._closed:
            return self._cache
        with self._lock:
            if self._closed:
                raise ValueError("the cache is closed")
            if self._cache is None:
                self._cache = larder.Cache(self._directory, **self._options)
            return self._cache

    async def open(self) -> "Cache":
        """Opens the store now (on the pool) and returns this cache."""
        await self._run(lambda: None)
        return self

    async def close(self) -> None:
        """Closes the store once the calls in flight return; the pool's threads end."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            cache, self._cache = self._cache, None
        if cache is not None:
            await self._pool.submit(loop, cache.close)
        self._pool.shutdown()

    async def __aenter__(self) -> "Cache":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def directory(self) -> Optional[str]:
        """The store's directory once it is open (None before, and for a memory cache)."""
        c = self._cache
        return None if c is None else c.directory

    @property
    def degraded(self) -> bool:
        """larder.Cache.degraded once the store is open (False before)."""
        c = self._cache
        return False if c is None else c.degraded

    @property
    def last_error(self) -> str:
        """larder.Cache.last_error once the store is open ("" before)."""
        c = self._cache
        return "" if c is None else c.last_error

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()

        def call() -> T:
            self._open_sync()
            return fn(*args, **kwargs)

        return await self._pool.submit(loop, call)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await self._run(lambda: getattr(self._open_sync(), name)(*args, **kwargs))

    # ---- memoize

    def memoize(self, expire: Optional[float] = None, category: str = "default",
                name: Optional[str] = None
                ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """Decorator caching an ``async def`` function's results, as larder.Cache.memoize: the
        key is the function's qualified name (or ``name``) and its arguments; the same key as
        larder.Cache.memoize gives, so both share results. Concurrent callers of one key in an
        event loop await one computation (single flight); an exception reaches every waiting
        caller and is not cached."""
        _expire(expire)  # checks it now

        def decorator(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            if not asyncio.iscoroutinefunction(fn):
                raise TypeError(f"larder.aio memoize takes an async def function, not {fn!r} "
                                "(larder.Cache.memoize is for plain functions)")
            base = name or f"{fn.__module__}.{fn.__qualname__}"

            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                key = CacheKey.from_parts("memoize", base, _argument_key(args, kwargs))
                hit = await self.get(key, _MISSING)
                if hit is not _MISSING:
                    return hit[0]
                return await self._single_flight(key, lambda: fn(*args, **kwargs), expire,
                                                 category)

            wrapper.cache_key = lambda *a, **kw: CacheKey.from_parts(  # type: ignore[attr-defined]
                "memoize", base, _argument_key(a, kw))
            return wrapper

        return decorator

    def _flight_changed(self, loop: asyncio.AbstractEventLoop) -> None:
        event = self._flight_events.pop(loop, None)
        if event is not None:
            event.set()

    async def _await_followers(self, key: str, n: int, timeout: float) -> bool:
        """Waits (at most ``timeout`` s) until ``n`` callers joined the computation of ``key``
        in this loop; False on timeout. Tests use it to let a leader go once all have joined
        (as core::Service::await_followers in C++)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            flight = self._flights.get(loop, {}).get(key)
            if flight is not None and flight.followers >= n:
                return True
            event = self._flight_events.setdefault(loop, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return False

    async def _single_flight(self, key: str, compute: Callable[[], Awaitable[Any]],
                             expire: Optional[float], category: str) -> Any:
        loop = asyncio.get_running_loop()
        flights = self._flights.setdefault(loop, {})
        joined = flights.get(key)
        if joined is not None:
            joined.followers += 1
            self._flight_changed(loop)
            # shield: a follower cancelled does not cancel the leader's computation.
            return await asyncio.shield(joined.future)
        flight = loop.create_future()
        flights[key] = _Flight(flight)
        self._flight_changed(loop)
        # An exception nobody awaited is not "never retrieved".
        flight.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            hit = await self.get(key, _MISSING)  # another process may have stored it meanwhile
            if hit is not _MISSING:
                value = hit[0]
            else:
                value = await compute()
                await self.set(key, (value,), expire=expire, category=category)
            flight.set_result(value)
            return value
        except asyncio.CancelledError:
            flight.cancel()  # the leader was cancelled: so are its followers
            raise
        except BaseException as e:
            if not flight.done():
                flight.set_exception(e)
            raise
        finally:
            flights.pop(key, None)
            if not flights:
                self._flights.pop(loop, None)


class _Completions:
    """Results for one event loop, handed to it in bursts: a worker appends its result and
    wakes the loop only when no wake-up is pending, so a busy pool costs the loop one wake-up
    per burst rather than one per call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: "collections.deque[Tuple[asyncio.Future[Any], Any, Optional[BaseException]]]" = (
            collections.deque())
        self._scheduled = False

    def post(self, future: "asyncio.Future[Any]", result: Any,
             error: Optional[BaseException]) -> None:
        with self._lock:
            self._items.append((future, result, error))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            pass

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, collections.deque()
            self._scheduled = False
        for future, result, error in items:
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


class _Pool:
    """``size`` threads (started as calls come) running the cache's calls; each call's result
    goes to its loop through that loop's _Completions."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()
        self._completions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Completions]" = (
            weakref.WeakKeyDictionary())
        self._idle = 0
        self._closed = False

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> "asyncio.Future[T]":
        future = loop.create_future()
        with self._lock:
            if self._closed:
                raise ValueError("the cache is closed")
            done = self._completions.get(loop)
            if done is None:
                done = self._completions[loop] = _Completions(loop)
            if self._idle == 0 and len(self._threads) < self._size:
                t = threading.Thread(target=self._work, name="larder-aio", daemon=True)
                self._threads.append(t)
                t.start()
            else:
                self._idle = max(0, self._idle - 1)
        self._queue.put((done, future, fn))
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            done, future, fn = item
            try:
                result, error = fn(), None
            except BaseException as e:  # handed to the awaiting task
                result, error = None, e
            done.post(future, result, error)
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """The threads end once the calls queued before return."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)


class _Flight:
    """A memoize computation in progress: its result, and how many callers joined it."""

    def __init__(self, future: "asyncio.Future[Any]") -> None:
        self.future = future
        self.followers = 0


def _coroutine(name: str) -> Callable[..., Awaitable[Any]]:
    sync = getattr(larder.Cache, name)

    async def method(self: Cache, *args: Any, **kwargs: Any) -> Any:
        return await self._call(name, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Coroutine form of larder.Cache.{name}. " + (sync.__doc__ or "")
    return method


for _name in _METHODS:
    setattr(Cache, _name, _coroutine(_name))
del _name
