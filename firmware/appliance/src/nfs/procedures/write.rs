//! WRITE and COMMIT, as NFSv3 intends them: libnfs and the Linux client write UNSTABLE and
//! COMMIT later, and a server that made every WRITE durable before answering would make a
//! client that writes one request at a time wait for two fsyncs per MiB.
//! - **WRITE, UNSTABLE**: checked (handle, state, size, an earlier failure of the file),
//!   acknowledged at once with this run's write verifier, then applied in the background
//!   with [`Store::write_unstable`](odt_store::Store::write_unstable) (readable at once,
//!   durable at the next commit). The request keeps its slot until the store call returns,
//!   so the background work is bounded like everything else.
//! - **WRITE, FILE_SYNC or DATA_SYNC**: answered once [`Store::write`](odt_store::Store::write)
//!   has made it durable.
//! - **COMMIT**: waits for the file's writes acknowledged before it
//!   ([`crate::pending`]), then makes everything queued durable
//!   ([`Store::sync`](odt_store::Store::sync)). A failed background write is reported here
//!   (or by the file's next WRITE).
//!
//! The appliance also flushes every two seconds ([`crate::serve`]). If it stops before an
//! UNSTABLE write is durable, the next run has a new write verifier, so clients send every
//! write they have not seen committed again: nothing a client was told is durable is lost.

use nfsserve::nfs::{fattr3, nfsstat3, nfstime3, post_op_attr, pre_op_attr, wcc_data};
use odt_store::format::journal::Kind;

use super::Call;
use crate::nfs::export::{Export, MAX_IO, Need};
use crate::nfs::status::Subject;

/// stable_how values.
pub const UNSTABLE: u32 = 0;
/// stable_how: the data (and metadata) are durable.
pub const FILE_SYNC: u32 = 2;

/// What the server does with a WRITE.
pub struct Answer {
    /// The reply record to send.
    pub reply: Vec<u8>,
    /// The store write still running after the reply (hold the slot until it ends).
    pub background: Option<tokio::task::JoinHandle<()>>,
}

impl From<Vec<u8>> for Answer {
    fn from(reply: Vec<u8>) -> Answer {
        Answer {
            reply,
            background: None,
        }
    }
}

/// A failed WRITE or COMMIT: the status and empty wcc data.
fn failed(c: &Call<'_>, st: nfsstat3) -> Vec<u8> {
    c.wcc_failed(st, wcc_data::default())
}

fn write_ok(
    c: &Call<'_>,
    after: fattr3,
    count: u32,
    committed: u32,
    verifier: &[u8; 8],
) -> Vec<u8> {
    c.status(nfsstat3::NFS3_OK, |r| {
        r.put(&wcc_data {
            before: pre_op_attr::Void,
            after: post_op_attr::attributes(after),
        })
        .word(count)
        .word(committed)
        .fixed(verifier);
    })
}

fn now() -> nfstime3 {
    crate::nfs::export::to_time(odt_store::format::journal::Time::now())
}

/// A decoded WRITE: the data is `record[data]`.
struct WriteArgs {
    fh: nfsserve::nfs::nfs_fh3,
    offset: u64,
    count: u32,
    stable: u32,
    data: std::ops::Range<usize>,
}

fn decode(record: &[u8], args_at: usize) -> Option<WriteArgs> {
    let mut x = crate::nfs::xdr::Xdr::new(record.get(args_at..)?);
    let fh = x.handle()?;
    let offset = x.u64()?;
    let count = x.u32()?;
    let stable = x.u32()?;
    if stable > FILE_SYNC {
        return None;
    }
    let data = x.opaque(MAX_IO as usize)?;
    if data.len() != count as usize {
        return None;
    }
    // Where the payload sits in the record (it is a slice of it).
    let start = data.as_ptr() as usize - record.as_ptr() as usize;
    Some(WriteArgs {
        fh,
        offset,
        count,
        stable,
        data: start..start + data.len(),
    })
}

/// WRITE. `record` is the whole request record; the arguments start at `args_at`. The
/// record moves into the background write, so the payload is never copied.
pub async fn write(x: &Export, xid: u32, record: Vec<u8>, args_at: usize) -> Answer {
    let c = Call {
        xid,
        caller: Default::default(),
        args: &[],
    };
    let Some(w) = decode(&record, args_at) else {
        return c.garbage().into();
    };
    let id = match x.id_of(&w.fh) {
        Ok(id) => id,
        Err(st) => return failed(&c, st).into(),
    };
    let store = match x.store(Need::Write) {
        Ok(s) => s.clone(),
        Err(st) => return failed(&c, st).into(),
    };
    if let Some(st) = x.pending.take_error(id) {
        return failed(&c, st).into();
    }
    let end = match w.offset.checked_add(w.count as u64) {
        Some(e) if e <= x.max_file_size() => e,
        _ => return failed(&c, nfsstat3::NFS3ERR_FBIG).into(),
    };
    let attr = match store.getattr(id) {
        Ok(a) => a,
        Err(e) => {
            let st = x.fail("WRITE", Subject::Object, e, || format!("file id {id}"));
            return failed(&c, st).into();
        }
    };
    match attr.kind {
        Kind::File => {}
        Kind::Dir => return failed(&c, nfsstat3::NFS3ERR_ISDIR).into(),
        Kind::Symlink => return failed(&c, nfsstat3::NFS3ERR_INVAL).into(),
    }
    let (offset, count) = (w.offset, w.count);
    let unstable = w.stable == UNSTABLE;
    let ticket = x.pending.begin(id, offset, end);
    let mut hint = x.fattr(&attr);
    hint.size = hint.size.max(ticket.max_end);
    hint.mtime = now();
    hint.ctime = hint.mtime;
    let data = w.data;
    let job = StoreWrite {
        x: x.clone(),
        store,
        id,
        offset,
        record,
        data,
        stable: !unstable,
        ticket,
    };
    if unstable {
        // Behind the reply: the client sends its next request meanwhile (more writes, whose
        // compression and encryption then overlap, or the COMMIT that waits for this one).
        let background = tokio::spawn(async move {
            let _ = job.run(Run::Pool).await;
        });
        return Answer {
            reply: write_ok(&c, hint, count, UNSTABLE, &x.verifier),
            background: Some(background),
        };
    }
    match job.run(Run::InPlace).await {
        Ok(a) => write_ok(&c, x.fattr(&a), count, FILE_SYNC, &x.verifier),
        Err(st) => failed(&c, st),
    }
    .into()
}

/// Where a store write runs.
enum Run {
    /// On the blocking pool (from a task of its own).
    Pool,
    /// On the current worker, handed over for the duration.
    InPlace,
}

/// One WRITE's store write, in the order the tracker gives it.
struct StoreWrite {
    x: Export,
    store: std::sync::Arc<odt_store::Store>,
    id: u64,
    offset: u64,
    record: Vec<u8>,
    data: std::ops::Range<usize>,
    stable: bool,
    ticket: crate::pending::Ticket,
}

impl StoreWrite {
    async fn run(self, how: Run) -> Result<odt_store::Attr, nfsstat3> {
        let StoreWrite {
            x,
            store,
            id,
            offset,
            record,
            data,
            stable,
            ticket,
        } = self;
        // Overlapping writes reach the store in arrival order.
        x.pending.wait_turn(&ticket).await;
        let count = data.len();
        let write = {
            let x = x.clone();
            move || {
                let bytes = &record[data];
                let r = if stable {
                    store.write(id, offset, bytes)
                } else {
                    store.write_unstable(id, offset, bytes)
                };
                r.map_err(|e| {
                    x.fail("WRITE", Subject::Object, e, || {
                        format!("{} at byte {offset} ({count} bytes)", x.path_of(&store, id))
                    })
                })
            }
        };
        let behind_the_reply = matches!(how, Run::Pool) && !stable;
        let r = match how {
            Run::Pool => tokio::task::spawn_blocking(write)
                .await
                .unwrap_or(Err(nfsstat3::NFS3ERR_SERVERFAULT)),
            Run::InPlace => x.blocking(write),
        };
        if r.is_ok() {
            x.app.meter().wrote(count as u64);
        }
        // The failure of a write answered before it ran waits for the file's next WRITE or
        // COMMIT; any other goes into its own reply.
        let sticky = if behind_the_reply {
            r.as_ref().err().copied()
        } else {
            None
        };
        x.pending.finish(ticket, sticky);
        r
    }
}

/// COMMIT.
pub async fn commit(x: &Export, c: &Call<'_>) -> Vec<u8> {
    let mut args = c.reader();
    let Some(fh) = (|| {
        let fh = args.handle()?;
        let _offset = args.u64()?;
        let _count = args.u32()?;
        Some(fh)
    })() else {
        return c.garbage();
    };
    let id = match x.id_of(&fh) {
        Ok(id) => id,
        Err(st) => return failed(c, st),
    };
    let store = match x.store(Need::Read) {
        Ok(s) => s.clone(),
        Err(st) => return failed(c, st),
    };
    x.pending.settle(id).await;
    if let Some(st) = x.pending.take_error(id) {
        return failed(c, st);
    }
    // Everything queued so far becomes durable (one group commit for all files).
    if let Err(e) = x.blocking(|| store.sync()) {
        let st = x.fail("COMMIT", Subject::Object, e, || x.path_of(&store, id));
        return failed(c, st);
    }
    match store.getattr(id) {
        Ok(a) => c.status(nfsstat3::NFS3_OK, |r| {
            r.put(&wcc_data {
                before: pre_op_attr::Void,
                after: post_op_attr::attributes(x.fattr(&a)),
            })
            .fixed(&x.verifier);
        }),
        Err(e) => failed(
            c,
            x.fail("COMMIT", Subject::Object, e, || format!("file id {id}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{FILE_SYNC, UNSTABLE};
    use crate::nfs::program::nfs3;
    use crate::testutil::{Args, Harness};
    use nfsserve::nfs::nfsstat3;

    fn write_args(h: &Harness, id: u64, offset: u64, stable: u32, data: &[u8]) -> Args {
        Args::new()
            .fh(&h.fh(id))
            .u64(offset)
            .u32(data.len() as u32)
            .u32(stable)
            .opaque(data)
    }

    /// (status, committed, verifier) of a WRITE reply.
    async fn write(
        h: &Harness,
        id: u64,
        offset: u64,
        stable: u32,
        data: &[u8],
    ) -> (u32, u32, Vec<u8>) {
        let mut r = h
            .nfs(nfs3::WRITE, write_args(h, id, offset, stable, data))
            .await;
        let st = r.status();
        r.wcc();
        if st != 0 {
            return (st, 0, Vec::new());
        }
        assert_eq!(r.u32(), data.len() as u32, "count");
        let committed = r.u32();
        (st, committed, vec![r.u32() as u8])
    }

    async fn commit(h: &Harness, id: u64) -> u32 {
        let mut r = h
            .nfs(nfs3::COMMIT, Args::new().fh(&h.fh(id)).u64(0).u32(0))
            .await;
        r.status()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unstable_writes_are_read_back_and_committed() {
        let h = Harness::unlocked_with(128 << 20);
        let f = h.create_file(h.root(), "f").await;
        assert_eq!(write(&h, f, 0, UNSTABLE, b"first version").await.0, 0);
        assert_eq!(write(&h, f, 0, UNSTABLE, b"SECOND").await.1, UNSTABLE);
        assert_eq!(h.read(f, 0, 100).await, (b"SECONDversion".to_vec(), true));
        assert_eq!(commit(&h, f).await, 0);
        let (st, how, _) = write(&h, f, 13, FILE_SYNC, b"!").await;
        assert_eq!((st, how), (0, FILE_SYNC));
        assert_eq!(h.read(f, 0, 100).await.0, b"SECONDversion!");
        assert_eq!(h.app.meter().totals().written, 13 + 6 + 1);
        // Gaps read as zeros; a READ past the end is empty with eof.
        assert_eq!(write(&h, f, 4096, FILE_SYNC, b"x").await.0, 0);
        let (head, eof) = h.read(f, 100, 10).await;
        assert_eq!((head, eof), (vec![0; 10], false));
        assert_eq!(h.read(f, 1 << 20, 10).await, (Vec::new(), true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refusals() {
        let h = Harness::locked();
        assert_eq!(
            write(&h, 1, 0, UNSTABLE, b"x").await.0,
            nfsstat3::NFS3ERR_ACCES as u32
        );
        assert_eq!(commit(&h, 1).await, nfsstat3::NFS3ERR_ACCES as u32);
        h.unlock();
        assert_eq!(
            write(&h, 1, 0, UNSTABLE, b"x").await.0,
            nfsstat3::NFS3ERR_ISDIR as u32
        );
        // Payload shorter than announced, count different from the payload, bad stable_how.
        let mut a = write_args(&h, 1, 0, UNSTABLE, b"abcd").bytes().to_vec();
        a.truncate(a.len() - 2);
        let r = h.nfs(nfs3::WRITE, Args::new().raw(&a)).await;
        assert_eq!(r.accept_stat(), 4, "GARBAGE_ARGS");
        let r = h
            .nfs(
                nfs3::WRITE,
                Args::new()
                    .fh(&h.fh(1))
                    .u64(0)
                    .u32(9)
                    .u32(0)
                    .opaque(b"abcd"),
            )
            .await;
        assert_eq!(r.accept_stat(), 4);
        let r = h.nfs(nfs3::WRITE, write_args(&h, 1, 0, 3, b"abcd")).await;
        assert_eq!(r.accept_stat(), 4);
        // A payload announced at 4 GiB with nothing behind it.
        let r = h
            .nfs(
                nfs3::WRITE,
                Args::new()
                    .fh(&h.fh(1))
                    .u64(0)
                    .u32(u32::MAX)
                    .u32(0)
                    .u32(u32::MAX),
            )
            .await;
        assert_eq!(r.accept_stat(), 4);
        let f = h.create_file(h.root(), "g").await;
        h.remove(h.root(), "g").await;
        assert_eq!(
            write(&h, f, 0, UNSTABLE, b"x").await.0,
            nfsstat3::NFS3ERR_STALE as u32
        );
        let g = h.create_file(h.root(), "h").await;
        assert_eq!(
            write(&h, g, u64::MAX - 1, UNSTABLE, b"xx").await.0,
            nfsstat3::NFS3ERR_FBIG as u32
        );
        // The store's capacity bounds a write's end: up to it is fine, past it is FBIG.
        let max = h.app.info().max_file_size;
        assert_eq!(
            write(&h, g, max - 1, UNSTABLE, b"xx").await.0,
            nfsstat3::NFS3ERR_FBIG as u32
        );
        assert_eq!(write(&h, g, max - 2, FILE_SYNC, b"xx").await.0, 0);
        h.app.test_seal().unwrap();
        assert_eq!(
            write(&h, g, 0, UNSTABLE, b"x").await.0,
            nfsstat3::NFS3ERR_ROFS as u32
        );
        assert_eq!(commit(&h, g).await, 0, "COMMIT still answers once sealed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_device_is_reported_by_the_next_write_or_commit() {
        let h = Harness::unlocked();
        let f = h.create_file(h.root(), "big").await;
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
            let (st, _, _) = write(&h, f, i << 20, UNSTABLE, &chunk).await;
            if st != 0 {
                first_error = Some(st);
                break;
            }
        }
        assert_eq!(first_error, Some(nfsstat3::NFS3ERR_NOSPC as u32));
        // Reported once; what was acknowledged before is readable.
        assert_eq!(h.read(f, 0, 16).await.0.len(), 16);
        assert_eq!(
            commit(&h, f).await,
            0,
            "the failure was reported once already"
        );
    }
}
