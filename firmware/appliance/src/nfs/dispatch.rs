//! The one dispatch table: a received record in, a reply out.
//!
//! The call header is checked first ([`rpc::parse_call`]: RPC version, credential size and
//! shape), then the program and version (NFS 3 and MOUNT 3 are served; other versions get
//! PROG_MISMATCH, other programs PROG_UNAVAIL), then the procedure (unknown numbers get
//! PROC_UNAVAIL). Retransmissions of non-idempotent calls are answered from the
//! [duplicate request cache](super::drc).

use std::net::IpAddr;
use std::sync::Arc;

use super::drc::{self, Drc, Seen};
use super::export::Export;
use super::framing::HEADER;
use super::procedures::{Call, attr, create, fs, lookup, mount, read, readdir, remove, write};
use super::program::{MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3, mount3, nfs3};
use super::rpc::{self, AcceptStat, Reply};

/// What the server does with one request.
#[derive(Default)]
pub struct Outcome {
    /// The reply record to send, if any (a retransmission of a call still running, or a
    /// message that is not a call, gets none).
    pub reply: Option<Vec<u8>>,
    /// Work still running after the reply (an UNSTABLE write): the request's resources are
    /// held until it ends.
    pub background: Option<tokio::task::JoinHandle<()>>,
}

impl From<Vec<u8>> for Outcome {
    fn from(reply: Vec<u8>) -> Outcome {
        Outcome {
            reply: Some(reply),
            background: None,
        }
    }
}

/// Routes calls to the procedures.
#[derive(Clone)]
pub struct Dispatcher {
    export: Export,
    drc: Arc<Drc>,
}

impl Dispatcher {
    /// A dispatcher for `export` with an empty duplicate request cache.
    pub fn new(export: Export) -> Self {
        Dispatcher {
            export,
            drc: Arc::new(Drc::default()),
        }
    }

    /// The export served.
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// Answers one request record (record mark, then the RPC message) from `client`.
    pub async fn dispatch(&self, client: IpAddr, record: Vec<u8>) -> Outcome {
        let h = match rpc::parse_call(record.get(HEADER..).unwrap_or_default()) {
            Ok(h) => h,
            Err(refusal) => {
                return Outcome {
                    reply: refusal.reply(),
                    background: None,
                };
            }
        };
        let args_at = HEADER + h.args;
        match (h.prog, h.vers) {
            (NFS_PROGRAM, NFS_V3) | (MOUNT_PROGRAM, MOUNT_V3) => {}
            (NFS_PROGRAM, _) => return Reply::prog_mismatch(h.xid, NFS_V3, NFS_V3).into(),
            (MOUNT_PROGRAM, _) => return Reply::prog_mismatch(h.xid, MOUNT_V3, MOUNT_V3).into(),
            _ => {
                return Reply::accepted(h.xid, AcceptStat::ProgUnavail)
                    .finish()
                    .into();
            }
        }
        let x = &self.export;
        if h.prog == NFS_PROGRAM && h.procedure == nfs3::WRITE {
            // The record moves into the store write: the payload is never copied.
            let a = write::write(x, h.xid, record, args_at).await;
            return Outcome {
                reply: Some(a.reply),
                background: a.background,
            };
        }
        let c = Call {
            xid: h.xid,
            caller: h.caller,
            args: &record[args_at..],
        };
        let ticket = if drc::is_non_idempotent(&h) {
            match self.drc.check(client, &h, c.args) {
                Seen::New(t) => Some(t),
                Seen::Running => return Outcome::default(),
                Seen::Replay(reply) => return reply.to_vec().into(),
            }
        } else {
            None
        };
        let reply = match h.prog {
            NFS_PROGRAM => match h.procedure {
                nfs3::NULL => c.void(),
                nfs3::GETATTR => attr::getattr(x, &c).await,
                nfs3::SETATTR => attr::setattr(x, &c).await,
                nfs3::LOOKUP => lookup::lookup(x, &c).await,
                nfs3::ACCESS => attr::access(x, &c).await,
                nfs3::READLINK => lookup::readlink(x, &c).await,
                nfs3::READ => read::read(x, &c).await,
                nfs3::CREATE => create::create(x, &c).await,
                nfs3::MKDIR => create::mkdir(x, &c).await,
                nfs3::SYMLINK => create::symlink(x, &c).await,
                nfs3::MKNOD => create::mknod(x, &c).await,
                nfs3::REMOVE => remove::remove(x, &c).await,
                nfs3::RMDIR => remove::rmdir(x, &c).await,
                nfs3::RENAME => remove::rename(x, &c).await,
                nfs3::LINK => create::link(x, &c).await,
                nfs3::READDIR => readdir::readdir(x, &c).await,
                nfs3::READDIRPLUS => readdir::readdirplus(x, &c).await,
                nfs3::FSSTAT => fs::fsstat(x, &c).await,
                nfs3::FSINFO => fs::fsinfo(x, &c).await,
                nfs3::PATHCONF => fs::pathconf(x, &c).await,
                nfs3::COMMIT => write::commit(x, &c).await,
                _ => Reply::accepted(h.xid, AcceptStat::ProcUnavail).finish(),
            },
            _ => match h.procedure {
                mount3::NULL | mount3::UMNTALL => c.void(),
                mount3::MNT => mount::mnt(x, &c).await,
                mount3::DUMP => mount::dump(&c),
                mount3::UMNT => mount::umnt(&c),
                mount3::EXPORT => mount::export(&c),
                _ => Reply::accepted(h.xid, AcceptStat::ProcUnavail).finish(),
            },
        };
        if let Some(t) = ticket {
            t.done(&reply);
        }
        reply.into()
    }
}

#[cfg(test)]
mod tests {
    use crate::nfs::program::{MOUNT_PROGRAM, NFS_PROGRAM, nfs3};
    use crate::testutil::{Args, Harness, ReplyReader, call_record};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn programs_versions_and_procedures() {
        let h = Harness::unlocked();
        let r = h.nfs(nfs3::NULL, Args::new()).await;
        assert_eq!((r.accept_stat(), r.remaining()), (0, 0));
        let r = h.nfs(22, Args::new()).await;
        assert_eq!(r.accept_stat(), 3, "PROC_UNAVAIL");
        let r = h.call(100000, 0, Args::new()).await;
        assert_eq!(r.accept_stat(), 1, "PROG_UNAVAIL (no portmapper here)");
        // NFS version 4 and MOUNT version 1: PROG_MISMATCH 3..3.
        for prog in [NFS_PROGRAM, MOUNT_PROGRAM] {
            let mut rec = call_record(7, prog, 0, &[]);
            rec[4 + 16..4 + 20]
                .copy_from_slice(&if prog == NFS_PROGRAM { 4u32 } else { 1 }.to_be_bytes());
            let mut r = ReplyReader::new(h.send(rec).await.unwrap());
            assert_eq!(r.accept_stat(), 2);
            assert_eq!((r.u32(), r.u32()), (3, 3));
        }
        // Not a call: no reply at all.
        let mut rec = call_record(8, NFS_PROGRAM, 0, &[]);
        rec[4 + 7] = 1;
        assert!(h.send(rec).await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retransmitted_remove_and_rename_get_the_first_reply() {
        let h = Harness::unlocked();
        let root = h.fh(h.root());
        h.create_file(h.root(), "a").await;
        h.create_file(h.root(), "b").await;
        let remove = call_record(
            1000,
            NFS_PROGRAM,
            nfs3::REMOVE,
            Args::new().fh(&root).text("a").bytes(),
        );
        let rename = call_record(
            1001,
            NFS_PROGRAM,
            nfs3::RENAME,
            Args::new().fh(&root).text("b").fh(&root).text("c").bytes(),
        );
        for rec in [remove, rename] {
            let first = h.send(rec.clone()).await.unwrap();
            assert_eq!(ReplyReader::new(first.clone()).status(), 0);
            // The same xid again (a client's retransmission after a reconnect).
            let again = h.send(rec.clone()).await.unwrap();
            assert_eq!(again, first, "the first reply, not NOENT");
            // Run again under a new xid, the call does fail: it was not run twice above.
            let mut fresh = rec.clone();
            fresh[4..8].copy_from_slice(&2000u32.to_be_bytes());
            let mut r = ReplyReader::new(h.send(fresh).await.unwrap());
            assert_eq!(r.status(), nfsserve::nfs::nfsstat3::NFS3ERR_NOENT as u32);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_credentials_are_refused_without_allocating() {
        let h = Harness::unlocked();
        // A 44-byte call whose credential announces 1 GiB, 4 GiB - 1, and a legal-size
        // AUTH_SYS credential whose group count says 64 Mi.
        for (flavor, body) in [
            (0u32, (1u32 << 30).to_be_bytes().to_vec()),
            (1, u32::MAX.to_be_bytes().to_vec()),
            (1, {
                let mut b = 20u32.to_be_bytes().to_vec();
                for w in [0u32, 0, 0, 0, 64 << 20] {
                    b.extend_from_slice(&w.to_be_bytes());
                }
                b
            }),
        ] {
            let mut msg = Vec::new();
            for w in [9u32, 0, 2, NFS_PROGRAM, 3, nfs3::GETATTR, flavor] {
                msg.extend_from_slice(&w.to_be_bytes());
            }
            msg.extend_from_slice(&body);
            let mut rec = (crate::nfs::framing::LAST_FRAGMENT | msg.len() as u32)
                .to_be_bytes()
                .to_vec();
            rec.extend_from_slice(&msg);
            let r = ReplyReader::new(h.send(rec).await.unwrap());
            assert_eq!(r.reply_stat(), 1, "MSG_DENIED");
        }
        // A GETATTR whose handle announces 512 MiB.
        let r = h.nfs(nfs3::GETATTR, Args::new().u32(512 << 20)).await;
        assert_eq!(r.accept_stat(), 4, "GARBAGE_ARGS");
    }
}
