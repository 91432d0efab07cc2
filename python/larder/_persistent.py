"""diskcache's Deque and Index on larder.diskcache (imported into it; docs/python.md, "Moving from
diskcache"): a persistent double-ended queue and a persistent insertion-ordered mapping, each a
larder.diskcache.Cache without a size limit, shared by the processes that open its directory.

Deque keeps its items under the cache's queue keys (push/pull with no prefix), so every operation
lists them: O(items). Index iterates in the order its items were created (an update of a key
moves it to the end).

Thread-safety: both may be used from many threads and processes at once; an operation that
reads and then writes (pop, rotate, setdefault, ...) runs inside the cache's transact().
"""

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

__all__ = ["Deque", "Index"]

_NOT_GIVEN = object()


def _cache_class() -> Any:
    from larder.diskcache import Cache
    return Cache


def _enoval() -> Any:
    from larder.diskcache import ENOVAL
    return ENOVAL


class _OnCache:
    """What Deque and Index share: the larder.diskcache.Cache they keep their items in."""

    _cache: Any

    @property
    def cache(self) -> Any:
        """The Cache holding the items."""
        return self._cache

    @property
    def directory(self) -> str:
        return self._cache.directory

    def transact(self) -> Any:
        """The cache's transact(): a critical section across threads and processes."""
        return self._cache.transact()


class Deque(_OnCache, Sequence):
    """A persistent deque in ``directory`` (None: a new temporary directory), holding
    ``iterable``'s items after what is already there. ``maxlen``: at most that many items; an
    append drops one from the other end."""

    def __init__(self, iterable: Iterable[Any] = (), directory: Optional[str] = None,
                 maxlen: Optional[int] = None) -> None:
        self._cache = _cache_class()(directory, eviction_policy="none")
        self._maxlen = maxlen
        self.extend(iterable)

    @classmethod
    def fromcache(cls, cache: Any, iterable: Iterable[Any] = (),
                  maxlen: Optional[int] = None) -> "Deque":
        """A Deque on an existing larder.diskcache.Cache."""
        self = cls.__new__(cls)
        self._cache = cache
        self._maxlen = maxlen
        self.extend(iterable)
        return self

    @property
    def maxlen(self) -> Optional[int]:
        return self._maxlen

    # ---- ends

    def _keys(self) -> List[Any]:
        return [key for _, key in self._cache._queue_keys(None)]

    def _trim(self, from_left: bool) -> None:
        if self._maxlen is None:
            return
        while len(self._cache) > self._maxlen:
            self._cache.pull(side="front" if from_left else "back")

    def append(self, value: Any) -> None:
        """Adds ``value`` at the right end."""
        with self.transact():
            self._cache.push(value, side="back")
            self._trim(from_left=True)

    def appendleft(self, value: Any) -> None:
        """Adds ``value`` at the left end."""
        with self.transact():
            self._cache.push(value, side="front")
            self._trim(from_left=False)

    def extend(self, iterable: Iterable[Any]) -> None:
        for value in iterable:
            self.append(value)

    def extendleft(self, iterable: Iterable[Any]) -> None:
        for value in iterable:
            self.appendleft(value)

    def _take(self, side: str, remove: bool) -> Any:
        enoval = _enoval()
        found = (self._cache.pull if remove else self._cache.peek)(default=enoval, side=side)
        if found is enoval:
            raise IndexError(f"{'pop' if remove else 'peek'} from an empty deque")
        return found[1]

    def pop(self) -> Any:
        """Removes and returns the rightmost item; IndexError when empty."""
        return self._take("back", True)

    def popleft(self) -> Any:
        """Removes and returns the leftmost item; IndexError when empty."""
        return self._take("front", True)

    def peek(self) -> Any:
        """The rightmost item; IndexError when empty."""
        return self._take("back", False)

    def peekleft(self) -> Any:
        """The leftmost item; IndexError when empty."""
        return self._take("front", False)

    # ---- the sequence

    def __len__(self) -> int:
        return len(self._cache)

    def _key_at(self, index: int) -> Any:
        keys = self._keys()
        if index < 0:
            index += len(keys)
        if not 0 <= index < len(keys):
            raise IndexError("deque index out of range")
        return keys[index]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        enoval = _enoval()
        value = self._cache.get(self._key_at(index), enoval)
        if value is enoval:
            raise IndexError("deque index out of range")
        return value

    def __setitem__(self, index: int, value: Any) -> None:
        with self.transact():
            self._cache.set(self._key_at(index), value)

    def __delitem__(self, index: int) -> None:
        with self.transact():
            self._cache.delete(self._key_at(index))

    def __iter__(self) -> Iterator[Any]:
        enoval = _enoval()
        for key in self._keys():
            value = self._cache.get(key, enoval)
            if value is not enoval:
                yield value

    def __reversed__(self) -> Iterator[Any]:
        enoval = _enoval()
        for key in reversed(self._keys()):
            value = self._cache.get(key, enoval)
            if value is not enoval:
                yield value

    def __contains__(self, value: Any) -> bool:
        return any(v == value for v in self)

    def count(self, value: Any) -> int:
        return sum(1 for v in self if v == value)

    def index(self, value: Any, start: int = 0, stop: Optional[int] = None) -> int:
        for i, v in enumerate(list(self)[start:stop], start if start >= 0 else 0):
            if v == value:
                return i
        raise ValueError(f"{value!r} is not in deque")

    def remove(self, value: Any) -> None:
        """Removes the first item equal to ``value``; ValueError when there is none."""
        enoval = _enoval()
        with self.transact():
            for key in self._keys():
                if self._cache.get(key, enoval) == value:
                    self._cache.delete(key)
                    return
        raise ValueError("deque.remove(value): value not in deque")

    def clear(self) -> None:
        self._cache.clear()

    def reverse(self) -> None:
        """Reverses the items in place."""
        with self.transact():
            values = list(self)
            self._cache.clear()
            for value in reversed(values):
                self._cache.push(value, side="back")

    def rotate(self, steps: int = 1) -> None:
        """Moves ``steps`` items from the right end to the left (left to right when negative)."""
        with self.transact():
            n = len(self)
            if n == 0:
                return
            steps %= n
            for _ in range(steps):
                self._cache.push(self._take("back", True), side="front")

    def __iadd__(self, iterable: Iterable[Any]) -> "Deque":
        self.extend(iterable)
        return self

    def _compare(self, that: Any, op: Callable[[Any, Any], bool]) -> Any:
        if not isinstance(that, Sequence):
            return NotImplemented
        return op(list(self), list(that))

    def __eq__(self, that: Any) -> Any:
        return self._compare(that, lambda a, b: a == b)

    def __ne__(self, that: Any) -> Any:
        return self._compare(that, lambda a, b: a != b)

    def __lt__(self, that: Any) -> Any:
        return self._compare(that, lambda a, b: a < b)

    def __le__(self, that: Any) -> Any:
        return self._compare(that, lambda a, b: a <= b)

    def __gt__(self, that: Any) -> Any:
        return self._compare(that, lambda a, b: a > b)

    def __ge__(self, that: Any) -> Any:
        return self._compare(that, lambda a, b: a >= b)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(directory={self.directory!r})"

    def __getstate__(self) -> Tuple[str, Optional[int]]:
        return self.directory, self._maxlen

    def __setstate__(self, state: Tuple[str, Optional[int]]) -> None:
        directory, maxlen = state
        self.__init__(directory=directory, maxlen=maxlen)


class Index(_OnCache, MutableMapping):
    """A persistent mapping in insertion order. ``Index()``, ``Index(directory)``,
    ``Index(directory, mapping_or_pairs, **kw)`` or ``Index(mapping_or_pairs, **kw)``; without
    a directory, a new temporary one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        directory = None
        if args and (args[0] is None or isinstance(args[0], (str, bytes)) or
                     hasattr(args[0], "__fspath__")):
            directory, args = args[0], args[1:]
            if isinstance(directory, bytes):
                directory = directory.decode()
        self._cache = _cache_class()(directory, eviction_policy="none")
        self.update(*args, **kwargs)

    @classmethod
    def fromcache(cls, cache: Any, *args: Any, **kwargs: Any) -> "Index":
        """An Index on an existing larder.diskcache.Cache."""
        self = cls.__new__(cls)
        self._cache = cache
        self.update(*args, **kwargs)
        return self

    def __getitem__(self, key: Any) -> Any:
        return self._cache[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._cache[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._cache[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cache)

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._cache)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._cache.get(key, default)

    def pop(self, key: Any, default: Any = _NOT_GIVEN) -> Any:  # type: ignore[override]
        """Removes ``key`` and returns its value; ``default`` if given, else KeyError, when it
        is missing."""
        enoval = _enoval()
        value = self._cache.pop(key, default=enoval)
        if value is enoval:
            if default is _NOT_GIVEN:
                raise KeyError(key)
            return default
        return value

    def popitem(self, last: bool = True) -> Tuple[Any, Any]:
        """Removes and returns the newest (or oldest) item; KeyError when empty."""
        with self.transact():
            key, value = self._cache.peekitem(last=last)
            self._cache.delete(key)
        return key, value

    def peekitem(self, last: bool = True) -> Tuple[Any, Any]:
        return self._cache.peekitem(last=last)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, storing ``default`` first when it is missing (atomic)."""
        enoval = _enoval()
        with self.transact():
            value = self._cache.get(key, enoval)
            if value is enoval:
                self._cache[key] = default
                return default
            return value

    def clear(self) -> None:
        self._cache.clear()

    def push(self, value: Any, prefix: Optional[str] = None, side: str = "back") -> Any:
        return self._cache.push(value, prefix=prefix, side=side)

    def pull(self, prefix: Optional[str] = None, default: Any = (None, None),
             side: str = "front") -> Any:
        return self._cache.pull(prefix=prefix, default=default, side=side)

    def memoize(self, name: Optional[str] = None, typed: bool = False,
                ignore: Any = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Cache.memoize without expiry or tag."""
        return self._cache.memoize(name=name, typed=typed, ignore=ignore)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Mapping) or len(self) != len(other):
            return False
        from collections import OrderedDict
        if isinstance(other, (Index, OrderedDict)):
            return list(self.items()) == list(other.items())
        return all(k in other and other[k] == v for k, v in self.items())

    def __ne__(self, other: Any) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.directory!r})"

    def __getstate__(self) -> str:
        return self.directory

    def __setstate__(self, state: str) -> None:
        self.__init__(state)

