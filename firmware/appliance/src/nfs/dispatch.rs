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
use super::procedures::{
    Call, attr, create, fs, lookup, mount, read, readdir, remove, write,
};
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
            _ => return Reply::accepted(h.xid, AcceptStat::ProgUnavail).finish().into(),
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
