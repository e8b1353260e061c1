//! WRITE and COMMIT, answered by the appliance itself.
//!
//! `nfsserve` 0.11 answers every WRITE with FILE_SYNC and has no COMMIT. Taken literally
//! that makes every 1 MiB write wait for the store's two fsyncs: a client that writes one
//! request at a time (libnfs's `nfs-cp`) then moved 54-78 MB/s here. libnfs and the Linux
//! client both ask for UNSTABLE writes and COMMIT later, as NFSv3 intends, so the gate
//! takes these two procedures off `nfsserve` and honours what the client asked for:
//! - **WRITE, UNSTABLE**: checked (handle, state, size, an earlier failure of the file),
//!   acknowledged at once with this run's write verifier, then applied in the background
//!   with [`Store::write_unstable`](odt_store::Store::write_unstable) (readable at once,
//!   durable at the next commit). The request keeps its gate slots until the store call
//!   returns, so the background work is bounded like everything else.
//! - **WRITE, FILE_SYNC or DATA_SYNC**: answered once [`Store::write`](odt_store::Store::write)
//!   has made it durable.
//! - **COMMIT**: waits for the file's writes acknowledged before it ([`crate::pending`]),
//!   then makes everything queued durable ([`Store::sync`](odt_store::Store::sync)). A
//!   failed background write is reported here (or by the file's next WRITE).
//!
//! The appliance also flushes every two seconds ([`crate::serve`]). If it stops before an
//! UNSTABLE write is durable, the next run has a new write verifier, so clients send every
//! write they have not seen committed again: nothing a client was told is durable is lost.

use nfsserve::nfs::nfsstat3;
use nfsserve::nfs::{self, fattr3, nfstime3, post_op_attr, pre_op_attr, wcc_data};

use crate::nfs::{Export, Need};
use crate::nfsstat::Subject;
use crate::rpc::{AcceptStat, CallHeader, Reply, Xdr};

/// stable_how values.
const UNSTABLE: u32 = 0;
const FILE_SYNC: u32 = 2;

/// What the gate does with a WRITE or COMMIT.
pub struct Answer {
    /// The reply record to send.
    pub reply: Vec<u8>,
    /// The store write still running after the reply (hold the slots until it ends).
    pub background: Option<tokio::task::JoinHandle<()>>,
}

fn no_wcc() -> wcc_data {
    wcc_data {
        before: pre_op_attr::Void,
        after: post_op_attr::Void,
    }
}

fn failed(xid: u32, status: nfsstat3) -> Vec<u8> {
    let mut r = Reply::accepted(xid, AcceptStat::Success);
    r.put(&status).put(&no_wcc());
    r.finish()
}

fn garbage(xid: u32) -> Vec<u8> {
    Reply::accepted(xid, AcceptStat::GarbageArgs).finish()
}

fn write_ok(xid: u32, after: fattr3, count: u32, committed: u32, verifier: &[u8; 8]) -> Vec<u8> {
    let mut r = Reply::accepted(xid, AcceptStat::Success);
    r.put(&nfsstat3::NFS3_OK)
        .put(&wcc_data {
            before: pre_op_attr::Void,
            after: post_op_attr::attributes(after),
        })
        .word(count)
        .word(committed)
        .fixed(verifier);
    r.finish()
}

fn now() -> nfstime3 {
    let t = odt_store::format::journal::Time::now();
    nfstime3 {
        seconds: t.secs.clamp(0, u32::MAX as i64) as u32,
        nseconds: t.nanos,
    }
}

impl Export {
    /// Answers an NFSv3 WRITE call. `record` is the whole request record; the call's
    /// message starts at `base`.
    pub async fn rpc_write(&self, call: &CallHeader, record: Vec<u8>, base: usize) -> Answer {
        let xid = call.xid;
        let reply = |reply| Answer {
            reply,
            background: None,
        };
        let args_at = base + call.args;
        let mut x = Xdr::new(&record[args_at..]);
        let parsed = (|| {
            let fh = x.opaque(nfs::NFS3_FHSIZE as usize)?.to_vec();
            let offset = x.u64()?;
            let count = x.u32()?;
            let stable = x.u32()?;
            let len = x.u32()?;
            let start = args_at + x.pos();
            (len == count && record.len() >= start + len as usize)
                .then_some((fh, offset, count, stable, start))
        })();
        let Some((fh, offset, count, stable, start)) = parsed else {
            return reply(garbage(xid));
        };
        let id = match self.handles.decode(&nfs::nfs_fh3 { data: fh }) {
            Ok(id) => id,
            Err(e) => return reply(failed(xid, e.status())),
        };
        let store = match self.store(Need::Write) {
            Ok(s) => s.clone(),
            Err(st) => return reply(failed(xid, st)),
        };
        if let Some(st) = self.pending.take_error(id) {
            return reply(failed(xid, st));
        }
        let end = offset.checked_add(count as u64);
        if end.is_none_or(|e| e > i64::MAX as u64) {
            return reply(failed(xid, nfsstat3::NFS3ERR_FBIG));
        }
        let attr = match self.blocking(|| store.getattr(id)) {
            Ok(a) => a,
            Err(e) => {
                let st = self.fail("WRITE", Subject::Object, e, || format!("file id {id}"));
                return reply(failed(xid, st));
            }
        };
        if attr.kind != odt_store::format::journal::Kind::File {
            let st = if attr.kind == odt_store::format::journal::Kind::Dir {
                nfsstat3::NFS3ERR_ISDIR
            } else {
                nfsstat3::NFS3ERR_INVAL
            };
            return reply(failed(xid, st));
        }
        let data = start..start + count as usize;
        let end = end.expect("checked above");
        let unstable = stable == UNSTABLE;
        let ticket = self.pending.begin(id, offset, end);
        let mut hint = self.fattr(&attr);
        hint.size = hint.size.max(ticket.max_end);
        hint.mtime = now();
        hint.ctime = hint.mtime;
        let me = self.clone();
        let task = tokio::spawn(async move {
            // Overlapping writes reach the store in arrival order.
            me.pending.wait_turn(&ticket).await;
            let w = me.clone();
            let r = tokio::task::spawn_blocking(move || {
                let r = if unstable {
                    store.write_unstable(id, offset, &record[data])
                } else {
                    store.write(id, offset, &record[data])
                };
                r.map_err(|e| {
                    w.fail("WRITE", Subject::Object, e, || {
                        format!("{} at byte {offset} ({count} bytes)", w.path_of(&store, id))
                    })
                })
            })
            .await
            .unwrap_or(Err(nfsstat3::NFS3ERR_SERVERFAULT));
            if r.is_ok() {
                me.app.meter().wrote(count as u64);
            }
            // An UNSTABLE write's failure waits for the file's next WRITE or COMMIT; a
            // stable one's goes into its own reply.
            let sticky = if unstable {
                r.as_ref().err().copied()
            } else {
                None
            };
            me.pending.finish(ticket, sticky);
            r
        });
        if unstable {
            let background = tokio::spawn(async move {
                let _ = task.await;
            });
            return Answer {
                reply: write_ok(xid, hint, count, UNSTABLE, &self.verifier),
                background: Some(background),
            };
        }
        reply(match task.await {
            Ok(Ok(a)) => write_ok(xid, self.fattr(&a), count, FILE_SYNC, &self.verifier),
            Ok(Err(st)) => failed(xid, st),
            Err(_) => failed(xid, nfsstat3::NFS3ERR_SERVERFAULT),
        })
    }

    /// Answers an NFSv3 COMMIT call (the message starts at `base` of `record`).
    pub async fn rpc_commit(&self, call: &CallHeader, record: &[u8], base: usize) -> Vec<u8> {
        let xid = call.xid;
        let mut x = Xdr::new(&record[base + call.args..]);
        let Some(fh) = x.opaque(nfs::NFS3_FHSIZE as usize).map(<[u8]>::to_vec) else {
            return garbage(xid);
        };
        if x.u64().is_none() || x.u32().is_none() {
            return garbage(xid);
        }
        let id = match self.handles.decode(&nfs::nfs_fh3 { data: fh }) {
            Ok(id) => id,
            Err(e) => return failed(xid, e.status()),
        };
        let store = match self.store(Need::Read) {
            Ok(s) => s.clone(),
            Err(st) => return failed(xid, st),
        };
        self.pending.settle(id).await;
        if let Some(st) = self.pending.take_error(id) {
            return failed(xid, st);
        }
        // Everything queued so far becomes durable (one group commit for all files).
        if let Err(e) = self.blocking(|| store.sync()) {
            let st = self.fail("COMMIT", Subject::Object, e, || self.path_of(&store, id));
            return failed(xid, st);
        }
        match self.blocking(|| store.getattr(id)) {
            Ok(a) => {
                let mut r = Reply::accepted(xid, AcceptStat::Success);
                r.put(&nfsstat3::NFS3_OK)
                    .put(&wcc_data {
                        before: pre_op_attr::Void,
                        after: post_op_attr::attributes(self.fattr(&a)),
                    })
                    .fixed(&self.verifier);
                r.finish()
            }
            Err(e) => failed(
                xid,
                self.fail("COMMIT", Subject::Object, e, || format!("file id {id}")),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::HEADER;
    use crate::testutil::{Fixture, call_record};
    use nfsserve::nfs::sattr3;
    use nfsserve::vfs::NFSFileSystem;

    /// An NFSv3 call record (record mark + message) with `args`.
    fn call(xid: u32, procedure: u32, args: &[u8]) -> (CallHeader, Vec<u8>) {
        call_record(xid, crate::rpc::NFS_PROGRAM, procedure, args)
    }

    fn fh_bytes(x: &Export, id: u64) -> Vec<u8> {
        let fh = x.id_to_fh(id).data;
        let mut v = (fh.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&fh);
        v.resize(v.len() + (4 - fh.len() % 4) % 4, 0);
        v
    }

    fn write_args(x: &Export, id: u64, offset: u64, stable: u32, data: &[u8]) -> Vec<u8> {
        let mut v = fh_bytes(x, id);
        v.extend_from_slice(&offset.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(&stable.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v.resize(v.len() + (4 - data.len() % 4) % 4, 0);
        v
    }

    fn commit_args(x: &Export, id: u64) -> Vec<u8> {
        let mut v = fh_bytes(x, id);
        v.extend_from_slice(&[0; 12]);
        v
    }

    fn word(r: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(r[at..at + 4].try_into().unwrap())
    }

    /// (accept_stat, nfs status) of a reply record.
    fn stats(r: &[u8]) -> (u32, Option<u32>) {
        (word(r, 24), (r.len() > 28).then(|| word(r, 28)))
    }

    /// committed and verifier of a successful WRITE reply.
    fn committed(r: &[u8]) -> (u32, [u8; 8]) {
        // status, pre_op (void), post_op (true + 84-byte fattr3), count
        let at = 28 + 4 + 4 + 4 + 84 + 4;
        (word(r, at), r[at + 4..at + 12].try_into().unwrap())
    }

    async fn write(x: &Export, id: u64, offset: u64, stable: u32, data: &[u8]) -> Answer {
        let (h, rec) = call(9, 7, &write_args(x, id, offset, stable, data));
        x.rpc_write(&h, rec, HEADER).await
    }

    async fn commit(x: &Export, id: u64) -> Vec<u8> {
        let (h, rec) = call(10, 21, &commit_args(x, id));
        x.rpc_commit(&h, &rec, HEADER).await
    }

    const OK: (u32, Option<u32>) = (0, Some(0));

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unstable_writes_are_read_back_and_committed() {
        let fx = Fixture::new(128 << 20);
        let x = Export::new(fx.unlocked());
        let (f, _) = x
            .create(1, &b"f"[..].into(), sattr3::default())
            .await
            .unwrap();
        let a = write(&x, f, 0, UNSTABLE, b"first version").await;
        assert_eq!(stats(&a.reply), OK);
        let (how, verf) = committed(&a.reply);
        assert_eq!(how, UNSTABLE);
        assert_eq!(verf, x.verifier);
        // Overwrite at once: the store must apply them in arrival order.
        let b = write(&x, f, 0, UNSTABLE, b"SECOND").await;
        assert_eq!(stats(&b.reply), OK);
        // READ and GETATTR see the acknowledged writes.
        assert_eq!(x.read(f, 0, 100).await.unwrap().0, b"SECONDversion");
        assert_eq!(x.getattr(f).await.unwrap().size, 13);
        let c = commit(&x, f).await;
        assert_eq!(stats(&c), OK);
        assert_eq!(&c[c.len() - 8..], &x.verifier);
        a.background.unwrap().await.unwrap();
        b.background.unwrap().await.unwrap();
        assert_eq!(x.pending.running(), 0);

        let s = write(&x, f, 13, FILE_SYNC, b"!").await;
        assert_eq!(stats(&s.reply), OK);
        assert!(s.background.is_none());
        assert_eq!(committed(&s.reply).0, FILE_SYNC);
        assert_eq!(x.read(f, 0, 100).await.unwrap().0, b"SECONDversion!");
        assert_eq!(x.app.meter().totals().written, 13 + 6 + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals() {
        let fx = Fixture::new(64 << 20);
        let app = fx.appliance(true);
        let x = Export::new(app.clone());
        // Locked: ACCES, for WRITE and COMMIT.
        let a = write(&x, 1, 0, UNSTABLE, b"x").await;
        assert_eq!(stats(&a.reply), (0, Some(nfsstat3::NFS3ERR_ACCES as u32)));
        assert!(a.background.is_none());
        assert_eq!(
            stats(&commit(&x, 1).await),
            (0, Some(nfsstat3::NFS3ERR_ACCES as u32))
        );
        app.unlock(&fx.code).unwrap();
        // A directory is not written to; a malformed call is garbage.
        let a = write(&x, 1, 0, UNSTABLE, b"x").await;
        assert_eq!(stats(&a.reply), (0, Some(nfsstat3::NFS3ERR_ISDIR as u32)));
        let (h, mut rec) = call(11, 7, &write_args(&x, 1, 0, UNSTABLE, b"abcd"));
        rec.truncate(rec.len() - 2);
        let a = x.rpc_write(&h, rec, HEADER).await;
        assert_eq!(stats(&a.reply), (4, None), "GARBAGE_ARGS");
        // A foreign handle is stale; a file that was removed too.
        let (f, _) = x
            .create(1, &b"g"[..].into(), sattr3::default())
            .await
            .unwrap();
        x.remove(1, &b"g"[..].into()).await.unwrap();
        let a = write(&x, f, 0, UNSTABLE, b"x").await;
        assert_eq!(stats(&a.reply), (0, Some(nfsstat3::NFS3ERR_STALE as u32)));
        let a = write(&x, 2, u64::MAX - 1, UNSTABLE, b"xx").await;
        assert_eq!(stats(&a.reply).1, Some(nfsstat3::NFS3ERR_FBIG as u32));
        // Sealed: ROFS; COMMIT still answers.
        let (f, _) = x
            .create(1, &b"h"[..].into(), sattr3::default())
            .await
            .unwrap();
        app.test_seal().unwrap();
        let a = write(&x, f, 0, UNSTABLE, b"x").await;
        assert_eq!(stats(&a.reply), (0, Some(nfsstat3::NFS3ERR_ROFS as u32)));
        assert_eq!(stats(&commit(&x, f).await), OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_device_is_reported_by_the_next_write_or_commit() {
        let fx = Fixture::new(64 << 20);
        let x = Export::new(fx.unlocked());
        let (f, _) = x
            .create(1, &b"big"[..].into(), sattr3::default())
            .await
            .unwrap();
        // Incompressible data, more than the device holds.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunk = vec![0u8; 1 << 20];
        let mut first_error = None;
        for i in 0..200u64 {
            for b in chunk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let a = write(&x, f, i << 20, UNSTABLE, &chunk).await;
            let (_, st) = stats(&a.reply);
            if st != Some(0) {
                first_error = st;
                break;
            }
            if let Some(b) = a.background {
                b.await.unwrap();
            }
        }
        assert_eq!(
            first_error,
            Some(nfsstat3::NFS3ERR_NOSPC as u32),
            "the next WRITE says NOSPC"
        );
        // Reported once; what was acknowledged before is readable.
        assert_eq!(x.read(f, 0, 16).await.unwrap().0.len(), 16);
        let c = commit(&x, f).await;
        assert_eq!(stats(&c), OK, "the failure was reported once already");
    }
}
