#!/usr/bin/env python3
"""NFS client helper for the end-to-end tests, on the PyPI `libnfs` binding (libnfs, not
written here). The binding's file objects ignore most errors, so every call that can fail
goes through the low-level functions and is checked here: a failure exits non-zero with
the path and the errno text.

  nfstool.py put LOCAL_DIR URL          copy a tree (mkdir, write 1 MiB pieces, fsync, close)
  nfstool.py manifest URL               "sha256 size path" per file, "dir - path" per dir
  nfstool.py manifest-local DIR         the same for a local tree
  nfstool.py writer URL COUNT SIZE SEED write f0000.. (seeded random); after each file's
                                        fsync+close print "committed NAME SHA256"
  nfstool.py trial-writer URL DIR LOCAL COUNT SIZE SEED
                                        the power-cut trials' copy (below)
  nfstool.py get URL LOCAL_DIR          copy the whole export into LOCAL_DIR
  nfstool.py try-create URL PATH        create PATH and write a byte; print "ok" or the errno name
  nfstool.py try-mkdir URL PATH         mkdir PATH; print "ok" or the errno name
  nfstool.py rm URL PATH                remove the file PATH
  nfstool.py try-write URL PATH SIZE    open PATH (created if missing, not truncated), write
                                        SIZE seeded bytes at its end in 1 MiB calls, fsync;
                                        print "ok" or "CALL ERRNO MESSAGE" of the first failure
                                        (MESSAGE: libnfs's error text, Python repr)
  nfstool.py try-truncate URL PATH SIZE create PATH, ftruncate it to SIZE (SETATTR); print
                                        "ok" or the errno name
  nfstool.py try-pwrite URL PATH OFF N  create PATH, write N bytes at OFF, fsync; print "ok" or
                                        the errno name
  nfstool.py sparse URL PATH SIZE OFF:LEN:SEED...
                                        create PATH of SIZE bytes (ftruncate) holding seeded
                                        data at each OFF:LEN, the rest holes; fsync, close
  nfstool.py sparse-local PATH SIZE OFF:LEN:SEED...
                                        the same file on the local file system
  nfstool.py ls URL DIR                 the names in DIR, one a line
  nfstool.py cat URL PATH               the file's bytes on stdout

URL is an NFS URL of the export root, e.g. nfs://127.0.0.1/?nfsport=P&mountport=P&version=3.
"""
import errno
import hashlib
import os
import random
import sys

import libnfs

CHUNK = 1 << 20


def fail(what, path, ret):
    code = -ret if isinstance(ret, int) and ret < 0 else 0
    name = errno.errorcode.get(code, "?")
    sys.stderr.write(f"nfstool: {what} {path!r} failed: {name} ({os.strerror(code) if code else ret})\n")
    sys.exit(2)


class Client:
    def __init__(self, url):
        self.ctx = libnfs.nfs_init_context()
        parsed = libnfs.nfs_parse_url_dir(self.ctx, url)
        if parsed is None:
            sys.stderr.write(f"nfstool: bad NFS URL {url!r}\n")
            sys.exit(2)
        ret = libnfs.nfs_mount(self.ctx, parsed.server, parsed.path)
        if ret != 0:
            fail("mount", url, ret)

    def open(self, path, flags):
        fh = libnfs.new_NFSFileHandle()
        ret = libnfs.nfs_open(self.ctx, path, flags, fh)
        if ret == -errno.ENOENT and flags & os.O_CREAT:
            ret = libnfs.nfs_create(self.ctx, path, flags, 0o644, fh)
        return ret, (libnfs.NFSFileHandle_value(fh) if ret == 0 else None)

    def write_file(self, path, data_chunks):
        ret, fh = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        if ret != 0:
            fail("create", path, ret)
        h = hashlib.sha256()
        for chunk in data_chunks:
            buf = bytearray(chunk)
            done = 0
            while done < len(buf):
                piece = buf[done:]
                n = libnfs.nfs_write(self.ctx, fh, len(piece), piece)
                if n <= 0:
                    fail("write", path, n)
                done += n
            h.update(chunk)
        ret = libnfs.nfs_fsync(self.ctx, fh)
        if ret != 0:
            fail("fsync", path, ret)
        ret = libnfs.nfs_close(self.ctx, fh)
        if ret != 0:
            fail("close", path, ret)
        return h.hexdigest()

    def chunks(self, path):
        """The file's bytes, CHUNK at a time (fails the run on an error)."""
        ret, fh = self.open(path, os.O_RDONLY)
        if ret != 0:
            fail("open", path, ret)
        while True:
            buf = bytearray(CHUNK)
            n = libnfs.nfs_read(self.ctx, fh, len(buf), buf)
            if n < 0:
                fail("read", path, n)
            if n == 0:
                break
            yield bytes(buf[:n])
        libnfs.nfs_close(self.ctx, fh)

    def read_hash(self, path):
        h = hashlib.sha256()
        size = 0
        for b in self.chunks(path):
            h.update(b)
            size += len(b)
        return h.hexdigest(), size

    def is_dir(self, path):
        st = libnfs.nfs_stat_64()
        ret = libnfs.nfs_stat64(self.ctx, path, st)
        if ret != 0:
            fail("stat", path, ret)
        return (st.nfs_mode & 0o170000) == 0o040000

    def listdir(self, path):
        d = libnfs.new_NFSDirHandle()
        ret = libnfs.nfs_opendir(self.ctx, path, d)
        if ret != 0:
            fail("opendir", path, ret)
        d = libnfs.NFSDirHandle_value(d)
        names = []
        while True:
            de = libnfs.nfs_readdir(self.ctx, d)
            if de is None:
                break
            if de.name not in (".", ".."):
                names.append(de.name)
        libnfs.nfs_closedir(self.ctx, d)
        return names

    def mkdir(self, path):
        ret = libnfs.nfs_mkdir(self.ctx, path)
        if ret != 0:
            fail("mkdir", path, ret)


def local_chunks(path):
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                return
            yield b


def put(local, url):
    c = Client(url)
    for root, dirs, files in os.walk(local):
        dirs.sort()
        rel = os.path.relpath(root, local)
        base = "/" if rel == "." else "/" + rel
        for d in dirs:
            c.mkdir(os.path.join(base, d))
        for f in sorted(files):
            c.write_file(os.path.join(base, f), local_chunks(os.path.join(root, f)))
    print("put done")


def manifest(url):
    c = Client(url)
    out = []

    def walk(path):
        for name in sorted(c.listdir(path)):
            p = (path.rstrip("/") + "/" + name)
            if c.is_dir(p):
                out.append(f"dir - {p[1:]}")
                walk(p)
            else:
                digest, size = c.read_hash(p)
                out.append(f"{digest} {size} {p[1:]}")

    walk("/")
    print("\n".join(sorted(out)))


def manifest_local(local):
    out = []
    for root, dirs, files in os.walk(local):
        rel = os.path.relpath(root, local)
        for d in dirs:
            out.append(f"dir - {os.path.normpath(os.path.join(rel, d))}")
        for f in files:
            p = os.path.join(root, f)
            h = hashlib.sha256()
            size = 0
            for b in local_chunks(p):
                h.update(b)
                size += len(b)
            out.append(f"{h.hexdigest()} {size} {os.path.normpath(os.path.join(rel, f))}")
    print("\n".join(sorted(out)))


def seeded(seed, size):
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(CHUNK, left)
        yield rng.randbytes(n)
        left -= n


def writer(url, count, size, seed):
    c = Client(url)
    for i in range(count):
        name = f"f{i:04}"
        digest = c.write_file("/" + name, seeded(seed * 100003 + i, size))
        print(f"committed {name} {digest}", flush=True)


def trial_writer(url, top, local, count, size, seed):
    """The copy of a power-cut trial: mkdir /TOP, then COUNT files of up to SIZE bytes
    (seeded random content, also kept in LOCAL/NAME for the checker), each written in
    pieces of 64-256 KiB, in order or shuffled, in one of three ways:
      sync:   opened O_SYNC, so libnfs sends every WRITE as FILE_SYNC;
      commit: UNSTABLE WRITEs, a COMMIT (fsync) every few pieces and at the end;
      rename: like commit, into NAME.part, then RENAME to NAME.
    Every call is reported on stdout (flushed) only after its reply came back:
      done mkdir P | done create P | done write P OFF LEN sync|unstable | done commit P |
      done rename A B
    and the namespace calls are announced before they are sent (intent mkdir|create|rename
    ...), so that the checker knows what the power cut may have left half-done. Paths are
    relative to the export root."""
    rng = random.Random(seed)
    c = Client(url)

    def say(line):
        print(line, flush=True)

    say(f"intent mkdir {top}")
    c.mkdir("/" + top)
    say(f"done mkdir {top}")
    for i in range(count):
        name = f"{top}/f{i:03}"
        how = rng.choice(["sync", "commit", "rename"])
        length = rng.randint(1, size)
        data = rng.randbytes(length)
        with open(os.path.join(local, name.replace("/", "_")), "wb") as f:
            f.write(data)
        path = name + ".part" if how == "rename" else name
        say(f"file {path} {how} {length} {name.replace('/', '_')}")
        say(f"intent create {path}")
        fh = libnfs.new_NFSFileHandle()
        ret = libnfs.nfs_create(c.ctx, "/" + path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, fh)
        if ret != 0:
            fail("create", path, ret)
        libnfs.nfs_close(c.ctx, libnfs.NFSFileHandle_value(fh))
        say(f"done create {path}")
        flags = os.O_WRONLY | (os.O_SYNC if how == "sync" else 0)
        ret, fh = c.open("/" + path, flags)
        if ret != 0:
            fail("open", path, ret)
        pieces = []
        off = 0
        while off < length:
            n = min(rng.choice([64, 128, 256]) << 10, length - off)
            pieces.append((off, n))
            off += n
        if rng.random() < 0.5:
            rng.shuffle(pieces)
        commit_every = rng.randint(2, 6)
        for k, (off, n) in enumerate(pieces):
            buf = bytearray(data[off:off + n])
            got = libnfs.nfs_pwrite(c.ctx, fh, off, n, buf)
            if got != n:
                fail("write", path, got)
            say(f"done write {path} {off} {n} {'sync' if how == 'sync' else 'unstable'}")
            if how != "sync" and (k + 1) % commit_every == 0:
                ret = libnfs.nfs_fsync(c.ctx, fh)
                if ret != 0:
                    fail("commit", path, ret)
                say(f"done commit {path}")
        if how != "sync":
            ret = libnfs.nfs_fsync(c.ctx, fh)
            if ret != 0:
                fail("commit", path, ret)
            say(f"done commit {path}")
        libnfs.nfs_close(c.ctx, fh)
        if how == "rename":
            say(f"intent rename {path} {name}")
            ret = libnfs.nfs_rename(c.ctx, "/" + path, "/" + name)
            if ret != 0:
                fail("rename", path, ret)
            say(f"done rename {path} {name}")
    say("finished")


def get(url, local):
    c = Client(url)

    def walk(path, dst):
        for name in sorted(c.listdir(path)):
            p = path.rstrip("/") + "/" + name
            d = os.path.join(dst, name)
            if c.is_dir(p):
                os.mkdir(d)
                walk(p, d)
            else:
                with open(d, "wb") as f:
                    for b in c.chunks(p):
                        f.write(b)

    walk("/", local)
    print("get done")


def try_op(url, op, path):
    c = Client(url)
    if op == "create":
        ret, fh = c.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        if ret == 0:
            buf = bytearray(b"x")
            ret = libnfs.nfs_write(c.ctx, fh, 1, buf)
            ret = 0 if ret == 1 else ret
            if ret == 0:
                ret = libnfs.nfs_fsync(c.ctx, fh)
    else:
        ret = libnfs.nfs_mkdir(c.ctx, path)
    print("ok" if ret == 0 else errno.errorcode.get(-ret, str(ret)))


def try_write(url, path, size):
    c = Client(url)
    fh = libnfs.new_NFSFileHandle()
    ret = libnfs.nfs_open(c.ctx, path, os.O_WRONLY | os.O_APPEND, fh)
    if ret == -errno.ENOENT:
        ret = libnfs.nfs_create(c.ctx, path, os.O_WRONLY | os.O_APPEND, 0o644, fh)
    if ret != 0:
        return report("open", ret, c)
    fh = libnfs.NFSFileHandle_value(fh)
    for chunk in seeded(size, size):
        buf = bytearray(chunk)
        n = libnfs.nfs_write(c.ctx, fh, len(buf), buf)
        if n < 0:
            return report("write", n, c)
    ret = libnfs.nfs_fsync(c.ctx, fh)
    if ret != 0:
        return report("fsync", ret, c)
    print("ok")


def report(call, ret, c):
    print(f"{call} {errno.errorcode.get(-ret, str(ret))} {libnfs.nfs_get_error(c.ctx)!r}")


def errname(ret):
    return "ok" if ret == 0 else errno.errorcode.get(-ret, str(ret))


def try_truncate(url, path, size):
    c = Client(url)
    ret, fh = c.open(path, os.O_WRONLY | os.O_CREAT)
    if ret == 0:
        ret = libnfs.nfs_ftruncate(c.ctx, fh, size)
    print(errname(ret))


def try_pwrite(url, path, offset, count):
    c = Client(url)
    ret, fh = c.open(path, os.O_WRONLY | os.O_CREAT)
    if ret == 0:
        buf = bytearray(b"\x5a" * count)
        n = libnfs.nfs_pwrite(c.ctx, fh, offset, count, buf)
        ret = 0 if n == count else (n if n < 0 else -errno.EIO)
        if ret == -errno.EFAULT:
            # libnfs 4 turns every failed WRITE into EFAULT and puts the raw NFS status,
            # as one byte, in its message (see nfs_space.rs): name that status instead.
            msg = libnfs.nfs_get_error(c.ctx) or ""
            nfs_errno = {"\x1b": -errno.EFBIG, "\x1c": -errno.ENOSPC, "\x1e": -errno.EROFS}
            ret = next((v for k, v in nfs_errno.items() if k in msg), ret)
        if ret == 0:
            ret = libnfs.nfs_fsync(c.ctx, fh)
    print(errname(ret))


def sparse(url, path, size, pieces):
    c = Client(url)
    ret, fh = c.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    if ret != 0:
        fail("create", path, ret)
    ret = libnfs.nfs_ftruncate(c.ctx, fh, size)
    if ret != 0:
        fail("ftruncate", path, ret)
    for piece in pieces:
        off, length, seed = (int(x) for x in piece.split(":"))
        buf = bytearray(b"".join(seeded(seed, length)))
        n = libnfs.nfs_pwrite(c.ctx, fh, off, len(buf), buf)
        if n != len(buf):
            fail("pwrite", path, n)
    ret = libnfs.nfs_fsync(c.ctx, fh)
    if ret != 0:
        fail("fsync", path, ret)
    libnfs.nfs_close(c.ctx, fh)


def sparse_local(path, size, pieces):
    with open(path, "wb") as f:
        f.truncate(size)
        for piece in pieces:
            off, length, seed = (int(x) for x in piece.split(":"))
            f.seek(off)
            f.write(b"".join(seeded(seed, length)))


def cat(url, path):
    for b in Client(url).chunks(path):
        sys.stdout.buffer.write(b)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "put":
        put(args[0], args[1])
    elif cmd == "manifest":
        manifest(args[0])
    elif cmd == "manifest-local":
        manifest_local(args[0])
    elif cmd == "writer":
        writer(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "trial-writer":
        trial_writer(args[0], args[1], args[2], int(args[3]), int(args[4]), int(args[5]))
    elif cmd == "get":
        get(args[0], args[1])
    elif cmd == "try-create":
        try_op(args[0], "create", args[1])
    elif cmd == "try-mkdir":
        try_op(args[0], "mkdir", args[1])
    elif cmd == "rm":
        c = Client(args[0])
        ret = libnfs.nfs_unlink(c.ctx, args[1])
        if ret != 0:
            fail("remove", args[1], ret)
    elif cmd == "try-write":
        try_write(args[0], args[1], int(args[2]))
    elif cmd == "try-truncate":
        try_truncate(args[0], args[1], int(args[2]))
    elif cmd == "try-pwrite":
        try_pwrite(args[0], args[1], int(args[2]), int(args[3]))
    elif cmd == "sparse":
        sparse(args[0], args[1], int(args[2]), args[3:])
    elif cmd == "sparse-local":
        sparse_local(args[0], int(args[1]), args[2:])
    elif cmd == "ls":
        for name in sorted(Client(args[0]).listdir(args[1])):
            print(name)
    elif cmd == "cat":
        cat(args[0], args[1])
    else:
        sys.exit(f"nfstool: unknown command {cmd}")


if __name__ == "__main__":
    main()
