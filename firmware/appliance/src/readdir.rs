//! READDIR, answered by the appliance itself.
//!
//! `nfsserve` 0.11 hands plain READDIR to `readdir_simple`, which gets no cookie, so every
//! page starts at the first entry again: a client that lists a directory larger than one
//! reply with READDIR (Linux with `nordirplus`, and clients without READDIRPLUS) loops
//! forever. Here the cookie of an entry is its file id, as in `nfsserve`'s READDIRPLUS, and
//! a page resumes after it. The cookie verifier is always zero: a cookie stays usable while
//! the directory changes (an entry removed meanwhile makes the listing start over rather
//! than fail, as the store's `readdir` does).

use nfsserve::nfs::{self, nfsstat3, post_op_attr};

use crate::nfs::{Export, Need};
use crate::nfsstat::Subject;
use crate::rpc::{AcceptStat, CallHeader, Reply, Xdr};

/// Bytes of the reply before the entries: status, dir attributes (bool + fattr3), verifier.
const HEAD: usize = 4 + 4 + 84 + 8;
/// Bytes after the entries: end of list, eof.
const TAIL: usize = 8;
/// Most entries fetched for one reply.
const MAX_ENTRIES: usize = 4096;

fn entry_size(name_len: usize) -> usize {
    // value follows, fileid, name (length + padded bytes), cookie
    4 + 8 + 4 + name_len.div_ceil(4) * 4 + 8
}

fn failed(xid: u32, status: nfsstat3) -> Vec<u8> {
    let mut r = Reply::accepted(xid, AcceptStat::Success);
    r.put(&status).put(&post_op_attr::Void);
    r.finish()
}

impl Export {
    /// Answers an NFSv3 READDIR call (the message starts at `base` of `record`).
    pub async fn rpc_readdir(&self, call: &CallHeader, record: &[u8], base: usize) -> Vec<u8> {
        let xid = call.xid;
        let mut x = Xdr::new(&record[base + call.args..]);
        let parsed = (|| {
            let fh = x.opaque(nfs::NFS3_FHSIZE as usize)?.to_vec();
            let cookie = x.u64()?;
            let _verifier = x.u64()?;
            let count = x.u32()?;
            Some((fh, cookie, count))
        })();
        let Some((fh, cookie, count)) = parsed else {
            return Reply::accepted(xid, AcceptStat::GarbageArgs).finish();
        };
        let dir = match self.handles.decode(&nfs::nfs_fh3 { data: fh }) {
            Ok(id) => id,
            Err(e) => return failed(xid, e.status()),
        };
        let store = match self.store(Need::Read) {
            Ok(s) => s.clone(),
            Err(st) => return failed(xid, st),
        };
        let budget = (count as usize).min(1 << 20);
        let want = (budget / entry_size(1)).clamp(1, MAX_ENTRIES);
        let listed = self.blocking(|| {
            let attr = store.getattr(dir)?;
            let (entries, end) = store.readdir(dir, cookie, want)?;
            Ok((attr, entries, end))
        });
        let (attr, entries, end) = match listed {
            Ok(x) => x,
            Err(e) => {
                return failed(
                    xid,
                    self.fail("READDIR", Subject::Object, e, || self.path_of(&store, dir)),
                );
            }
        };
        let mut r = Reply::accepted(xid, AcceptStat::Success);
        r.put(&nfsstat3::NFS3_OK)
            .put(&post_op_attr::attributes(self.fattr(&attr)))
            .fixed(&[0; 8]);
        let mut used = HEAD + TAIL;
        let mut all = true;
        for e in &entries {
            let need = entry_size(e.name.len());
            if used + need > budget {
                all = false;
                break;
            }
            used += need;
            r.word(1)
                .put(&e.attr.id)
                .put(&nfs::nfsstring(e.name.clone()))
                .put(&e.attr.id);
        }
        if !all && used == HEAD + TAIL {
            // Not even one entry fits the client's count.
            return failed(xid, nfsstat3::NFS3ERR_TOOSMALL);
        }
        r.word(0).word((all && end) as u32);
        r.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::HEADER;
    use crate::testutil::{Fixture, call_record};
    use nfsserve::nfs::sattr3;
    use nfsserve::vfs::NFSFileSystem;

    fn call(x: &Export, dir: u64, cookie: u64, count: u32) -> (CallHeader, Vec<u8>) {
        let fh = x.id_to_fh(dir).data;
        let mut args = (fh.len() as u32).to_be_bytes().to_vec();
        args.extend_from_slice(&fh);
        args.extend_from_slice(&cookie.to_be_bytes());
        args.extend_from_slice(&[0; 8]);
        args.extend_from_slice(&count.to_be_bytes());
        call_record(3, crate::rpc::NFS_PROGRAM, 16, &args)
    }

    /// (status, entries (id, name, cookie), eof) of a READDIR reply.
    fn parse(r: &[u8]) -> (u32, Vec<(u64, String, u64)>, bool) {
        let mut x = Xdr::new(&r[HEADER + 24..]);
        let status = x.u32().unwrap();
        if status != 0 {
            return (status, Vec::new(), false);
        }
        assert_eq!(x.u32(), Some(1), "directory attributes follow");
        for _ in 0..84 / 4 {
            x.u32().unwrap();
        }
        x.u64().unwrap();
        let mut out = Vec::new();
        while x.u32() == Some(1) {
            let id = x.u64().unwrap();
            let name = String::from_utf8(x.opaque(255).unwrap().to_vec()).unwrap();
            let cookie = x.u64().unwrap();
            out.push((id, name, cookie));
        }
        let eof = x.u32() == Some(1);
        (status, out, eof)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_resume_after_the_cookie() {
        let fx = Fixture::new(64 << 20);
        let x = Export::new(fx.unlocked());
        let (d, _) = x.mkdir(1, &b"d"[..].into()).await.unwrap();
        for i in 0..300 {
            let name = format!("entry-{i:04}-{}", "n".repeat(i % 50));
            x.create(d, &name.as_bytes().into(), sattr3::default())
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cookie = 0;
        let mut pages = 0;
        loop {
            let (h, rec) = call(&x, d, cookie, 2048);
            let reply = x.rpc_readdir(&h, &rec, HEADER).await;
            assert!(
                reply.len() - HEADER - 24 <= 2048,
                "a page exceeds the client's count"
            );
            let (status, entries, eof) = parse(&reply);
            assert_eq!(status, 0);
            pages += 1;
            assert!(pages < 100, "the listing does not end");
            seen.extend(entries.iter().map(|e| e.1.clone()));
            if eof {
                break;
            }
            cookie = entries
                .last()
                .expect("a page that is not the last has entries")
                .2;
        }
        assert!(pages > 5, "{pages} pages");
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(seen.len(), 300, "every entry once");
        assert_eq!(unique.len(), 300);

        // Errors: too small a count, a file handle, a locked appliance.
        let (h, rec) = call(&x, d, 0, 10);
        assert_eq!(
            parse(&x.rpc_readdir(&h, &rec, HEADER).await).0,
            nfsstat3::NFS3ERR_TOOSMALL as u32
        );
        let f = x.lookup(d, &b"entry-0000-"[..].into()).await.unwrap();
        let (h, rec) = call(&x, f, 0, 4096);
        assert_eq!(
            parse(&x.rpc_readdir(&h, &rec, HEADER).await).0,
            nfsstat3::NFS3ERR_NOTDIR as u32
        );
        let locked = Export::new(fx.appliance(false));
        let (h, rec) = call(&locked, 1, 0, 4096);
        assert_eq!(
            parse(&locked.rpc_readdir(&h, &rec, HEADER).await).0,
            nfsstat3::NFS3ERR_ACCES as u32
        );
    }
}
