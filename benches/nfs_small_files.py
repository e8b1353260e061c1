#!/usr/bin/env python3
"""One libnfs connection writes COUNT files of MIN..MAX bytes (seeded random sizes and
contents) into DIRS directories, as a tree copy onto a mounted share does: per directory
a MKDIR, per file a create, one write, and a close after COMMIT (nfs_fsync). Prints the
elapsed seconds of the copy (mount excluded) and files/s.

  nfs_small_files.py URL COUNT DIRS MIN MAX SEED [--steps]

URL is the NFS URL of the export root (libnfs syntax, version=3). With --steps, also prints
to stderr the mean time of each step per file as the client sees it (create: LOOKUP and
CREATE; write: WRITE; fsync: COMMIT; close: libnfs's closing COMMIT), which is where a
file's time goes.
"""
import os
import random
import sys
import time

import libnfs


def fail(what, path, ret):
    sys.stderr.write(f"nfs_small_files: {what} {path!r} failed: {ret}\n")
    sys.exit(2)


def main():
    steps = "--steps" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--steps"]
    url, count, dirs, lo, hi, seed = args[0], *map(int, args[1:6])
    spent = {"create": 0.0, "write": 0.0, "fsync": 0.0, "close": 0.0}
    ctx = libnfs.nfs_init_context()
    parsed = libnfs.nfs_parse_url_dir(ctx, url)
    if parsed is None:
        fail("parse", url, "bad URL")
    ret = libnfs.nfs_mount(ctx, parsed.server, parsed.path)
    if ret != 0:
        fail("mount", url, ret)
    rng = random.Random(seed)
    # Contents generated before the clock starts: the copy is what is timed.
    files = []
    for i in range(count):
        size = rng.randint(lo, hi)
        files.append((f"/d{i % dirs:02}/f{i:05}", bytearray(rng.randbytes(size))))
    t0 = time.monotonic()
    for d in range(min(dirs, count)):
        path = f"/d{d:02}"
        ret = libnfs.nfs_mkdir(ctx, path)
        if ret != 0:
            fail("mkdir", path, ret)
    clock = time.monotonic
    for path, data in files:
        a = clock()
        fh = libnfs.new_NFSFileHandle()
        ret = libnfs.nfs_creat(ctx, path, 0o644, fh)
        if ret != 0:
            fail("create", path, ret)
        fh = libnfs.NFSFileHandle_value(fh)
        b = clock()
        n = libnfs.nfs_write(ctx, fh, len(data), data)
        if n != len(data):
            fail("write", path, n)
        c = clock()
        ret = libnfs.nfs_fsync(ctx, fh)
        if ret != 0:
            fail("fsync", path, ret)
        d = clock()
        ret = libnfs.nfs_close(ctx, fh)
        if ret != 0:
            fail("close", path, ret)
        e = clock()
        for k, v in (("create", b - a), ("write", c - b), ("fsync", d - c), ("close", e - d)):
            spent[k] += v
    secs = time.monotonic() - t0
    print(f"{secs:.3f} {count / secs:.0f}")
    if steps:
        per = " ".join(f"{k} {v / count * 1e6:.0f} us" for k, v in spent.items())
        sys.stderr.write(f"per file: {per}; total {secs / count * 1e6:.0f} us\n")


if __name__ == "__main__":
    main()
