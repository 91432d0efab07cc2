"""Nothing a cache holds runs code (docs/python.md, "Security"): values written through a real
redis-server by another "machine" (a cache with another root) are safe kinds in msgpack, signed
pickles, or misses."""

import dataclasses
import os
import select
import shutil
import socket
import struct
import subprocess
import time

import pytest

import larder

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class Resp:
    """A minimal RESP client on a Unix socket (an attacker's redis-cli)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile("rb")

    def __call__(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self._read()

    def _read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t in (b"+", b"-"):
            return rest.decode()
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            return [self._read() for _ in range(int(rest))]
        raise ValueError(line)

    def close(self):
        self.f.close()
        self.s.close()


@pytest.fixture
def redis(tmp_path):
    d = tmp_path / "redis"
    d.mkdir()
    sock = str(d / "redis.sock")
    # Ready once it says so on its standard output (no polling): at most 10 s.
    p = subprocess.Popen([REDIS, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
                          "--save", "", "--appendonly", "no", "--dir", str(d),
                          "--loglevel", "notice"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    seen = b""
    while b"ready to accept connections" not in seen.lower():
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
            p.kill()
            pytest.fail("redis-server did not start")
        chunk = os.read(p.stdout.fileno(), 4096)
        if not chunk:
            pytest.fail("redis-server exited")
        seen = seen[-64:] + chunk
    # Later output is not read: it goes to a pipe nobody drains, so say little.
    r = Resp(sock)
    assert r("CONFIG", "SET", "loglevel", "warning") == "OK"
    try:
        yield sock, r
    finally:
        r.close()
        p.kill()
        p.wait()
        p.stdout.close()


def url(sock, **options):
    q = "&".join(f"{k}={v}" for k, v in {"prefix": "team", **options}.items())
    return f"redis+unix://{sock}?{q}"


def machine(tmp_path, name, remote):
    lines = []
    c = larder.Cache(tmp_path / name, remote=remote, log=lambda lvl, m: lines.append(m))
    c.log_lines = lines  # type: ignore[attr-defined]
    return c


class Evil:
    """What an attacker stores: loading its pickle runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclasses.dataclass
class Artifact:
    name: str
    size: int


def secret_file(tmp_path, name, secret, mode=0o600):
    p = tmp_path / name
    p.write_bytes(secret)
    os.chmod(p, mode)
    return p


def record_v1(value, metadata, category=b"default", ttl_s=0):
    """A record in remote format 1, as an attacker with Redis access plants it."""
    out = struct.pack("<Bqq", 1, time.time_ns(), ttl_s)
    out += struct.pack("<I", len(category)) + category
    out += struct.pack("<I", len(metadata))
    for k, v in metadata.items():
        out += struct.pack("<I", len(k)) + k + struct.pack("<I", len(v)) + v
    return out + value


def test_a_pickle_from_another_machine_runs_no_code(tmp_path, redis):
    sock, _ = redis
    marker = tmp_path / "pwned"
    attacker = machine(tmp_path, "attacker", url(sock))
    victim = machine(tmp_path, "victim", url(sock))
    assert attacker.set("build:artifact", Evil(marker))
    errors = victim.stats().error_count
    assert victim.get("build:artifact", "miss") == "miss"
    assert not marker.exists()
    assert victim.stats().error_count == errors + 1
    assert any("build:artifact" in m and "secret_file" in m for m in victim.log_lines)
    # Logged once per cache, counted every time.
    lines = len(victim.log_lines)
    assert victim.get("build:artifact") is None
    assert victim.stats().error_count == errors + 2
    assert len(victim.log_lines) == lines
    # A machine still reads the objects it wrote itself (signed with its own key).
    assert victim.set("own", Artifact("lib.so", 1))
    assert victim.get("own") == Artifact("lib.so", 1)


def test_a_planted_unsigned_pickle_is_a_miss(tmp_path, redis):
    import pickle
    sock, r = redis
    marker = tmp_path / "pwned"
    victim = machine(tmp_path, "victim", url(sock))
    payload = pickle.dumps(Evil(marker))
    for kind in (b"pickle", b"pickle+hmac"):
        value = payload if kind == b"pickle" else b"\0" * 32 + payload
        assert r("SET", b"team:e:k-" + kind, record_v1(value, {b"larder.kind": kind})) == "OK"
        errors = victim.stats().error_count
        assert victim.get("k-" + kind.decode(), "miss") == "miss"
        assert victim.stats().error_count == errors + 1
    assert not marker.exists()


def test_safe_kinds_cross_machines_with_their_types(tmp_path, redis):
    sock, r = redis
    a = machine(tmp_path, "a", url(sock))
    b = machine(tmp_path, "b", url(sock))
    values = {
        "none": None, "true": True, "int": -7, "big": 2**100, "float": 2.5, "str": "héllo",
        "bytes": b"\x00\xff", "list": [1, "two", 3.0, None],
        "tuple": (1, (2, "three"), [4]), "dict": {"a": [1, {"b": (2, 3)}], 5: "five",
                                                   (1, 2): b"pair", None: False},
        "empty": (),
    }
    for k, v in values.items():
        assert a.set(k, v), k
    for k, v in values.items():
        got = b.get(k, "miss")
        assert got == v and type(got) is type(v), (k, got)
    assert type(b.get("tuple")[1]) is tuple and type(b.get("tuple")[2]) is list
    # Stored as msgpack, not pickled: visible in the record's metadata.
    rec = r("GET", "team:e:tuple")
    assert b"msgpack" in rec and b"pickle" not in rec


def test_objects_cross_machines_sharing_a_secret_file(tmp_path, redis):
    sock, _ = redis
    s = secret_file(tmp_path, "team.secret", b"correct horse battery staple\n")
    a = machine(tmp_path, "a", url(sock, secret_file=s))
    b = machine(tmp_path, "b", url(sock, secret_file=s))
    assert a.set("artifact", Artifact("lib.so", 123))
    got = b.get("artifact")
    assert got == Artifact("lib.so", 123) and type(got) is Artifact


def test_another_secret_cannot_make_a_reader_load_its_pickle(tmp_path, redis):
    sock, r = redis
    marker = tmp_path / "pwned"
    mine = secret_file(tmp_path, "mine.secret", b"ours")
    theirs = secret_file(tmp_path, "theirs.secret", b"not ours")
    attacker = machine(tmp_path, "attacker", url(sock, secret_file=theirs))
    victim = machine(tmp_path, "victim", url(sock, secret_file=mine))
    assert attacker.set("build:artifact", Evil(marker))
    assert attacker.set("plain", "text")
    remote_errors = victim.stats().remote_error_count
    assert victim.get("build:artifact", "miss") == "miss"
    assert victim.get("plain", "miss") == "miss"  # the whole record is refused, any kind
    assert not marker.exists()
    assert victim.stats().remote_error_count == remote_errors + 2
    assert any("does not verify" in m for m in victim.log_lines)
    # A record planted with redis-cli SET (unsigned) is refused too.
    assert r("SET", "team:e:planted", record_v1(b"hello", {b"larder.kind": b"str"})) == "OK"
    assert victim.get("planted", "miss") == "miss"
    assert victim.stats().remote_error_count == remote_errors + 3
    assert any("not signed" in m for m in victim.log_lines)


@pytest.mark.parametrize("problem", ["missing", "empty", "group", "other"])
def test_a_bad_secret_file_is_refused_naming_it(tmp_path, problem):
    p = tmp_path / "s"
    if problem != "missing":
        p.write_bytes(b"" if problem == "empty" else b"secret")
        os.chmod(p, {"empty": 0o600, "group": 0o640, "other": 0o604}[problem])
    with pytest.raises(larder.ConfigError, match="secret_file"):
        larder.Cache(tmp_path / "c", remote=f"redis://127.0.0.1:1?secret_file={p}")


def test_the_own_key_is_private_and_kept(tmp_path):
    root = tmp_path / "c"
    with larder.Cache(root) as c:
        assert c.set("obj", Artifact("x", 1))
    key = root / "value.key"
    assert (os.stat(key).st_mode & 0o777) == 0o600 and os.path.getsize(key) == 32
    with larder.Cache(root) as c:  # another run of the program reads what the last one signed
        assert c.get("obj") == Artifact("x", 1)
    os.chmod(key, 0o644)  # a key others can read is not used: a fresh in-process key instead
    lines = []
    with larder.Cache(root, log=lambda lvl, m: lines.append(m)) as c:
        assert c.get("obj") is None
        assert any("value.key" in m for m in lines)


def test_hostile_value_bytes_never_raise_from_a_read(tmp_path):
    """Random and truncated bytes under every kind: a value or a miss, never an exception."""
    import random
    rng = random.Random(7)
    c = larder.Cache(tmp_path / "c")
    impl = c._c
    good = c._encode({"a": (1, [2.5, None]), "b": 2**80})[0]
    samples = [good[:i] for i in range(len(good))] + [
        bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64))) for _ in range(2000)]
    samples += [b"\xc7\xff\x01" + b"\x91" * 100, b"\xdd\xff\xff\xff\xff", b"\xc7\x05\x02" + b"9" * 5,
                b"\xc9\x7f\xff\xff\xff\x01"]  # a huge ext length, a huge array, big-int junk
    errors = c.stats().error_count
    refused = 0
    for raw in samples:
        for kind in ("msgpack", "pickle+hmac", "pickle", "str", "int", "bogus"):
            if c._decode("k", raw, kind) is larder._MISSING:
                refused += 1
    assert refused > 0 and c.stats().error_count == errors + refused
    assert impl is c._c
