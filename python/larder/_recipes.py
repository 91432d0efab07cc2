"""diskcache's recipes on larder.diskcache (imported into it; docs/python.md, "Moving from
diskcache"): a running average, locks and a semaphore shared by threads and processes, a throttle,
a barrier and memoize with early recomputation against stampedes. Each keeps its state in one
cache item and changes it inside the cache's transact(), so processes sharing the directory
share it.

Thread-safety: every recipe object may be used from many threads and processes at once.
"""

import functools
import math
import os
import random
import threading
import time
from typing import Any, Callable, Optional

__all__ = ["Averager", "Lock", "RLock", "BoundedSemaphore", "throttle", "barrier",
           "memoize_stampede"]

_MISSING = object()
_POLL = 0.001  # how often a blocked acquire looks again (diskcache's recipes poll too)
_RECOMPUTE_THREAD = "larder-memoize-stampede"  # memoize_stampede's background recomputations


def _full_name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


class Averager:
    """A running average: the total and count under ``key``."""

    def __init__(self, cache: Any, key: Any, expire: Optional[float] = None,
                 tag: Any = None) -> None:
        self._cache, self._key, self._expire, self._tag = cache, key, expire, tag

    def add(self, value: float) -> None:
        """Adds ``value`` to the average."""
        with self._cache.transact():
            total, count = self._cache.get(self._key, default=(0.0, 0))
            self._cache.set(self._key, (total + value, count + 1), expire=self._expire,
                            tag=self._tag)

    def get(self) -> Optional[float]:
        """The average, None when nothing was added."""
        total, count = self._cache.get(self._key, default=(0.0, 0))
        return None if count == 0 else total / count

    def pop(self) -> Optional[float]:
        """The average, removing it; None when nothing was added."""
        total, count = self._cache.pop(self._key, default=(0.0, 0))
        return None if count == 0 else total / count


class Lock:
    """A lock across threads and processes: held while ``key`` is in the cache."""

    def __init__(self, cache: Any, key: Any, expire: Optional[float] = None,
                 tag: Any = None) -> None:
        self._cache, self._key, self._expire, self._tag = cache, key, expire, tag

    def acquire(self) -> None:
        """Waits until the lock is free and takes it."""
        while not self._cache.add(self._key, None, expire=self._expire, tag=self._tag):
            time.sleep(_POLL)

    def release(self) -> None:
        """Frees the lock."""
        self._cache.delete(self._key)

    def locked(self) -> bool:
        """True while some thread or process holds the lock."""
        return self._key in self._cache

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def _owner_id() -> str:
    return f"{os.getpid()}-{threading.get_ident()}"


class RLock:
    """A re-entrant lock across threads and processes: (holder, depth) under ``key``."""

    def __init__(self, cache: Any, key: Any, expire: Optional[float] = None,
                 tag: Any = None) -> None:
        self._cache, self._key, self._expire, self._tag = cache, key, expire, tag

    def acquire(self) -> None:
        """Waits until the lock is free or held by this thread, and takes it once more."""
        me = _owner_id()
        while True:
            with self._cache.transact():
                holder, depth = self._cache.get(self._key, default=(None, 0))
                if depth == 0 or holder == me:
                    self._cache.set(self._key, (me, depth + 1), expire=self._expire,
                                    tag=self._tag)
                    return
            time.sleep(_POLL)

    def release(self) -> None:
        """Gives up one acquire; AssertionError when this thread does not hold the lock."""
        me = _owner_id()
        with self._cache.transact():
            holder, depth = self._cache.get(self._key, default=(None, 0))
            assert holder == me and depth > 0, "cannot release un-acquired lock"
            self._cache.set(self._key, (holder, depth - 1), expire=self._expire, tag=self._tag)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


class BoundedSemaphore:
    """A semaphore across threads and processes, starting at ``value``; the count left is
    under ``key``."""

    def __init__(self, cache: Any, key: Any, value: int = 1, expire: Optional[float] = None,
                 tag: Any = None) -> None:
        self._cache, self._key, self._value = cache, key, value
        self._expire, self._tag = expire, tag

    def acquire(self) -> None:
        """Waits until the count is above 0 and lowers it."""
        while True:
            with self._cache.transact():
                left = self._cache.get(self._key, default=self._value)
                if left > 0:
                    self._cache.set(self._key, left - 1, expire=self._expire, tag=self._tag)
                    return
            time.sleep(_POLL)

    def release(self) -> None:
        """Raises the count; AssertionError when that would pass the starting value."""
        with self._cache.transact():
            left = self._cache.get(self._key, default=self._value)
            assert self._value > left, "cannot release un-acquired semaphore"
            self._cache.set(self._key, left + 1, expire=self._expire, tag=self._tag)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def throttle(cache: Any, count: int, seconds: float, name: Optional[str] = None,
             expire: Optional[float] = None, tag: Any = None,
             time_func: Callable[[], float] = time.time,
             sleep_func: Callable[[float], None] = time.sleep
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator letting ``count`` calls through per ``seconds`` (a token bucket under the
    function's name, shared by every process on the cache); a call beyond waits (sleep_func)."""
    rate = count / float(seconds)

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        key = name or _full_name(func)
        cache.set(key, (time_func(), count), expire=expire, tag=tag)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            while True:
                with cache.transact():
                    last, tally = cache.get(key, default=(time_func(), count))
                    now = time_func()
                    tally = min(count, tally + (now - last) * rate)
                    delay = 0.0
                    if tally >= 1:
                        cache.set(key, (now, tally - 1), expire=expire, tag=tag)
                    else:
                        delay = (1 - tally) / rate
                if delay <= 0:
                    return func(*args, **kwargs)
                sleep_func(delay)

        return wrapper

    return decorator


def barrier(cache: Any, lock_factory: Callable[..., Any], name: Optional[str] = None,
            expire: Optional[float] = None, tag: Any = None
            ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator running the function under a lock made by ``lock_factory`` (Lock, RLock,
    BoundedSemaphore) named after it: calls from every thread and process take turns."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        lock = lock_factory(cache, name or _full_name(func), expire=expire, tag=tag)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return func(*args, **kwargs)

        return wrapper

    return decorator


def memoize_stampede(cache: Any, expire: float, name: Optional[str] = None,
                     typed: bool = False, tag: Any = None, beta: float = 1,
                     ignore: Any = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Memoize with early recomputation (Vattani et al., VLDB 2015): a hit close to its expiry
    is recomputed in a background thread with a probability that grows as the expiry nears and
    with the computation's cost (``beta`` scales it); callers keep getting the cached result
    meanwhile. Results are stored with the time their computation took."""
    from larder.diskcache import _args_to_key

    if callable(name):
        raise TypeError("name cannot be callable: use @memoize_stampede(cache, expire)")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        base = (name or _full_name(func),)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            result = func(*args, **kwargs)
            return result, time.time() - start

        def recompute(key: Any, args: Any, kwargs: Any) -> None:
            pair = timed(*args, **kwargs)
            cache.set(key, pair, expire=expire, tag=tag)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = wrapper.__cache_key__(*args, **kwargs)  # type: ignore[attr-defined]
            pair, expire_time = cache.get(key, default=_MISSING, expire_time=True)
            if pair is not _MISSING:
                result, delta = pair
                ttl = (expire_time or math.inf) - time.time()
                if -delta * beta * math.log(random.random() or 1e-300) < ttl:
                    return result
                # Early: one background recomputation per key at a time.
                thread_key = key + ("larder.recompute",)
                if cache.add(thread_key, None, expire=max(delta, 1.0)):
                    def run() -> None:
                        # Best effort: a failure (the function raising, the cache closed
                        # meanwhile) leaves the cached result to expire as it would have.
                        try:
                            recompute(key, args, kwargs)
                            cache.delete(thread_key)
                        except Exception:
                            pass

                    threading.Thread(target=run, name=_RECOMPUTE_THREAD, daemon=True).start()
                return result
            pair = timed(*args, **kwargs)
            cache.set(key, pair, expire=expire, tag=tag)
            return pair[0]

        wrapper.__cache_key__ = (  # type: ignore[attr-defined]
            lambda *a, **kw: _args_to_key(base, a, kw, typed, ignore))
        return wrapper

    return decorator
