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
  nfstool.py trial-writer URL DIR LOCAL COUNT SIZE SEED [SMALL RENAMES]
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


class Trial:
    """One power-cut trial's copy (see trial_writer). With `c` None it only counts the lines
    it would print (the same seed draws the same schedule), for the "plan" line."""

    # Long names make each namespace call a large journal entry, so that the small journal
    # the trials provision is compacted within a few trials.
    LONG = 236

    def __init__(self, c, top, local, seed):
        self.c = c
        self.top = top
        self.local = local
        self.rng = random.Random(seed)
        self.lines = 0
        self.content = {}
        self.versions = 0

    def say(self, line):
        self.lines += 1
        if self.c is not None:
            print(line, flush=True)

    def keep(self, name, data):
        """Keeps `data` (a file's whole expected content) in LOCAL; returns its file name."""
        self.versions += 1
        local = f"{name.replace('/', '_')[:200]}.v{self.versions}"
        if self.c is not None:
            with open(os.path.join(self.local, local), "wb") as f:
                f.write(data)
        return local

    def pieces(self, off, length):
        out = []
        end = off + length
        while off < end:
            n = min(self.rng.choice([64, 128, 256]) << 10, end - off)
            out.append((off, n))
            off += n
        if self.rng.random() < 0.5:
            self.rng.shuffle(out)
        return out

    def write_pieces(self, path, how, data, pieces):
        """Writes `pieces` of `data` into the existing file `path`: FILE_SYNC (O_SYNC), or
        UNSTABLE with a COMMIT every few pieces and at the end."""
        c = self.c
        commit_every = self.rng.randint(2, 6)
        fh = None
        if c is not None:
            ret, fh = c.open("/" + path, os.O_WRONLY | (os.O_SYNC if how == "sync" else 0))
            if ret != 0:
                fail("open", path, ret)
        for k, (off, n) in enumerate(pieces):
            if c is not None:
                buf = bytearray(data[off:off + n])
                got = libnfs.nfs_pwrite(c.ctx, fh, off, n, buf)
                if got != n:
                    fail("write", path, got)
            self.say(f"done write {path} {off} {n} {'sync' if how == 'sync' else 'unstable'}")
            if how != "sync" and (k + 1) % commit_every == 0:
                self.commit(fh, path)
        if how != "sync":
            self.commit(fh, path)
        if c is not None:
            libnfs.nfs_close(c.ctx, fh)

    def commit(self, fh, path):
        if self.c is not None:
            ret = libnfs.nfs_fsync(self.c.ctx, fh)
            if ret != 0:
                fail("commit", path, ret)
        self.say(f"done commit {path}")

    def mkdir(self):
        self.say(f"intent mkdir {self.top}")
        if self.c is not None:
            self.c.mkdir("/" + self.top)
        self.say(f"done mkdir {self.top}")

    def new_file(self, name, how, length):
        data = self.rng.randbytes(length)
        self.content[name] = data
        local = self.keep(name, data)
        path = name + ".part" if how == "rename" else name
        self.say(f"file {path} {how} {length} {local}")
        self.say(f"intent create {path}")
        if self.c is not None:
            fh = libnfs.new_NFSFileHandle()
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            ret = libnfs.nfs_create(self.c.ctx, "/" + path, flags, 0o644, fh)
            if ret != 0:
                fail("create", path, ret)
            libnfs.nfs_close(self.c.ctx, libnfs.NFSFileHandle_value(fh))
        self.say(f"done create {path}")
        self.write_pieces(path, how, data, self.pieces(0, length))
        if how == "rename":
            self.rename(path, name)

    def overwrite(self, name):
        """Overwrites a range of the whole file `name` with new bytes."""
        old = self.content[name]
        off = self.rng.randrange(len(old))
        n = self.rng.randint(1, min(512 << 10, len(old) - off))
        how = self.rng.choice(["sync", "commit"])
        new = old[:off] + self.rng.randbytes(n) + old[off + n:]
        self.content[name] = new
        local = self.keep(name, new)
        self.say(f"overwrite {name} {how} {off} {n} {local}")
        self.write_pieces(name, how, new, self.pieces(off, n))

    def remove(self, name):
        self.say(f"intent remove {name}")
        if self.c is not None:
            ret = libnfs.nfs_unlink(self.c.ctx, "/" + name)
            if ret != 0:
                fail("remove", name, ret)
        self.say(f"done remove {name}")
        self.content.pop(name, None)

    def rename(self, a, b):
        self.say(f"intent rename {a} {b}")
        if self.c is not None:
            ret = libnfs.nfs_rename(self.c.ctx, "/" + a, "/" + b)
            if ret != 0:
                fail("rename", a, ret)
        self.say(f"done rename {a} {b}")
        if a in self.content:
            self.content[b] = self.content.pop(a)

    def run(self, count, size, small, renames):
        """Returns the lines of the prefix (mkdir and the renames)."""
        rng = self.rng
        self.mkdir()
        # Renames back and forth between two long names: journal entries without data, so
        # that a small journal is compacted within a few trials.
        if renames:
            a = f"{self.top}/j-" + "a" * self.LONG
            b = a[: -self.LONG] + "b" * self.LONG
            self.new_file(a, "sync", 4096)
            for _ in range(renames // 2):
                self.rename(a, b)
                self.rename(b, a)
        prefix = self.lines
        big = []
        for i in range(count):
            name = f"{self.top}/f{i:03}"
            self.new_file(name, rng.choice(["sync", "commit", "rename"]), rng.randint(1, size))
            big.append(name)
            # Churn: small files of which most are removed again, an overwrite in place,
            # sometimes a whole file removed: closed segments fall under half live and the
            # appliance cleans them while the copy goes on.
            smalls = []
            for j in range(small):
                s = f"{self.top}/s{i:02}{j:03}-" + "a" * self.LONG
                self.new_file(s, rng.choice(["sync", "commit"]), rng.randint(64 << 10, 512 << 10))
                smalls.append(s)
            self.overwrite(rng.choice(big))
            rng.shuffle(smalls)
            for s in smalls[2:]:
                self.remove(s)
            if len(big) > 1 and rng.random() < 0.3:
                self.remove(big.pop(rng.randrange(len(big) - 1)))
        self.say("finished")
        return prefix


def trial_writer(url, top, local, count, size, seed, small, renames):
    """The copy of a power-cut trial: mkdir /TOP, then COUNT files of up to SIZE bytes
    (seeded random content, each version also kept in LOCAL for the checker), each written
    in pieces of 64-256 KiB, in order or shuffled, in one of three ways:
      sync:   opened O_SYNC, so libnfs sends every WRITE as FILE_SYNC;
      commit: UNSTABLE WRITEs, a COMMIT (fsync) every few pieces and at the end;
      rename: like commit, into NAME.part, then RENAME to NAME.
    Before the files, a prefix: a small file renamed RENAMES times back and forth between
    two long names. After each file, churn: SMALL files of 64-512 KiB with long names (sync
    or commit), a range of one of the files overwritten in place (sync or commit), all but
    two of the small files removed, sometimes an earlier file removed.
    The first line is "plan N P": the lines the whole copy prints after it, P of them the
    prefix's. Every call is reported on
    stdout (flushed) only after its reply came back:
      done mkdir P | done create P | done write P OFF LEN sync|unstable | done commit P |
      done rename A B | done remove P
    the namespace calls are announced before they are sent (intent mkdir|create|remove|
    rename ...), so that the checker knows what the power cut may have left half-done; and
    each file's content is announced before its writes: "file P HOW LEN LOCAL" for a new
    file, "overwrite P HOW OFF LEN LOCAL" for an overwrite (LOCAL: the whole new content;
    the writes after it are of that content). Paths are relative to the export root."""
    planned = Trial(None, top, local, seed)
    prefix = planned.run(count, size, small, renames)
    print(f"plan {planned.lines} {prefix}", flush=True)
    Trial(Client(url), top, local, seed).run(count, size, small, renames)


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
        small, renames = (int(args[6]), int(args[7])) if len(args) > 7 else (0, 0)
        trial_writer(args[0], args[1], args[2], int(args[3]), int(args[4]), int(args[5]), small, renames)
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
