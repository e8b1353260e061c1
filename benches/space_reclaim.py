#!/usr/bin/env python3
"""NFS client of benches/space-reclaim, on the PyPI `libnfs` binding: one connection per
call, every call checked (a failure exits 2 with the path and the errno text).

  space_reclaim.py write URL SPEC...   write each file in 1 MiB WRITEs, then COMMIT (fsync)
                                       and close; prints "SECONDS BYTES" (mount excluded)
  space_reclaim.py rm URL NAME...      remove each file
  space_reclaim.py check URL SPEC...   read each file back and compare its SHA-256 with the
                                       content SPEC stands for; exits 1 on a difference

SPEC is NAME:SIZE:SEED (created, or truncated if it exists) or NAME:SIZE:SEED:inplace
(opened without truncation and written over from offset 0: an overwrite in place). The
content of a file is a function of its seed: 1 MiB slices at seeded offsets of a seeded
64 MiB random pool, so it is incompressible, differs between seeds, costs the client
little to produce, and can be produced again to check a read-back.

URL is the NFS URL of the export root (libnfs syntax, version=3).
"""
import errno
import hashlib
import os
import random
import sys
import time

import libnfs

CHUNK = 1 << 20
POOL = random.Random(0x0D7).randbytes(64 << 20)


def fail(what, path, ret):
    code = -ret if isinstance(ret, int) and ret < 0 else 0
    name = errno.errorcode.get(code, "?")
    text = os.strerror(code) if code else ret
    sys.stderr.write(f"space_reclaim: {what} {path!r} failed: {name} ({text})\n")
    sys.exit(2)


def spec(s):
    parts = s.split(":")
    return parts[0], int(parts[1]), int(parts[2]), parts[3:] == ["inplace"]


def content(size, seed):
    """The file's bytes, CHUNK at a time."""
    rng = random.Random(seed)
    done = 0
    while done < size:
        n = min(CHUNK, size - done)
        off = rng.randrange(len(POOL) - n)
        yield memoryview(POOL)[off : off + n]
        done += n


def connect(url):
    ctx = libnfs.nfs_init_context()
    parsed = libnfs.nfs_parse_url_dir(ctx, url)
    if parsed is None:
        sys.stderr.write(f"space_reclaim: bad NFS URL {url!r}\n")
        sys.exit(2)
    ret = libnfs.nfs_mount(ctx, parsed.server, parsed.path)
    if ret != 0:
        fail("mount", url, ret)
    return ctx


def open_file(ctx, path, flags):
    fh = libnfs.new_NFSFileHandle()
    ret = libnfs.nfs_open(ctx, path, flags, fh)
    if ret == -errno.ENOENT and flags & os.O_CREAT:
        ret = libnfs.nfs_create(ctx, path, flags, 0o644, fh)
    if ret != 0:
        fail("open", path, ret)
    return libnfs.NFSFileHandle_value(fh)


def write(url, specs):
    ctx = connect(url)
    total = 0
    spent = 0.0
    for name, size, seed, inplace in map(spec, specs):
        path = "/" + name
        # A file's buffers are made before its clock starts: the copy is what is timed.
        chunks = [bytearray(c) for c in content(size, seed)]
        t0 = time.monotonic()
        flags = os.O_WRONLY | (0 if inplace else os.O_CREAT | os.O_TRUNC)
        fh = open_file(ctx, path, flags)
        for buf in chunks:
            done = 0
            while done < len(buf):
                piece = buf[done:] if done else buf
                n = libnfs.nfs_write(ctx, fh, len(piece), piece)
                if n <= 0:
                    fail("write", path, n)
                done += n
        ret = libnfs.nfs_fsync(ctx, fh)
        if ret != 0:
            fail("fsync", path, ret)
        ret = libnfs.nfs_close(ctx, fh)
        if ret != 0:
            fail("close", path, ret)
        spent += time.monotonic() - t0
        total += size
    print(f"{spent:.3f} {total}")


def rm(url, names):
    ctx = connect(url)
    for name in names:
        ret = libnfs.nfs_unlink(ctx, "/" + name)
        if ret != 0:
            fail("remove", "/" + name, ret)


def check(url, specs):
    ctx = connect(url)
    bad = 0
    for name, size, seed, _ in map(spec, specs):
        path = "/" + name
        want = hashlib.sha256()
        for c in content(size, seed):
            want.update(c)
        fh = open_file(ctx, path, os.O_RDONLY)
        got = hashlib.sha256()
        n_total = 0
        while True:
            buf = bytearray(CHUNK)
            n = libnfs.nfs_read(ctx, fh, len(buf), buf)
            if n < 0:
                fail("read", path, n)
            if n == 0:
                break
            got.update(memoryview(buf)[:n])
            n_total += n
        libnfs.nfs_close(ctx, fh)
        if n_total != size or got.hexdigest() != want.hexdigest():
            sys.stderr.write(f"space_reclaim: {path}: read back {n_total} bytes, sha256 "
                             f"{got.hexdigest()}; wrote {size} bytes, sha256 {want.hexdigest()}\n")
            bad += 1
    sys.exit(1 if bad else 0)


def main():
    cmd, url, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    {"write": write, "rm": rm, "check": check}[cmd](url, rest)


if __name__ == "__main__":
    main()
