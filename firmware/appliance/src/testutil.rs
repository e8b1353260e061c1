//! Test fixtures: a provisioned device image in a temp dir (odt-test-support's), an
//! appliance on it, and a harness that sends NFS and MOUNT calls through the real
//! dispatcher and reads replies.

use std::net::IpAddr;
use std::sync::Arc;

use nfsserve::nfs::{fattr3, nfs_fh3, sattr3, wcc_attr};
use nfsserve::xdr::XDR;
use odt_test_support::rpc;

use crate::nfs::framing::HEADER;
use crate::nfs::program::{MOUNT_PROGRAM, NFS_PROGRAM, nfs3};
use crate::nfs::{Dispatcher, Export};
use crate::state::Appliance;

/// A provisioned one-device set (job `job-unit`), with the appliance on top.
pub struct Fixture(odt_test_support::fixture::Fixture);

impl std::ops::Deref for Fixture {
    type Target = odt_test_support::fixture::Fixture;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Fixture {
    /// A set of one image of `size` bytes.
    pub fn new(size: u64) -> Fixture {
        Fixture(odt_test_support::fixture::Fixture::for_job(
            "job-unit",
            1,
            size,
            Default::default(),
        ))
    }

    /// A locked appliance on the set.
    pub fn appliance(&self, test_hooks: bool) -> Arc<Appliance> {
        Arc::new(Appliance::open(&self.paths, test_hooks).unwrap())
    }

    /// An unlocked appliance on the set.
    pub fn unlocked(&self) -> Arc<Appliance> {
        let a = self.appliance(true);
        a.unlock(&self.code).unwrap();
        a
    }
}

/// The same call as the server reads it: a record mark, then a call of `program` version 3
/// with AUTH_NONE credential and verifier, then `args`.
pub fn call_record(xid: u32, program: u32, procedure: u32, args: &[u8]) -> Vec<u8> {
    rpc::record(&rpc::call(xid, program, procedure, args))
}

/// XDR-encoded call arguments, built item by item (the shared test-support builder, which
/// also encodes `nfsserve`'s file handles and attributes).
pub use odt_test_support::rpc::Xdr as Args;

/// A reply record read item by item (the test's side; trusted bytes).
#[derive(Debug)]
pub struct ReplyReader {
    buf: Vec<u8>,
    pos: usize,
}

impl ReplyReader {
    /// A reader of `record` (record mark included), positioned after the reply header.
    pub fn new(record: Vec<u8>) -> ReplyReader {
        let mark = u32::from_be_bytes(record[..4].try_into().unwrap());
        assert_eq!(
            (mark & !crate::nfs::framing::LAST_FRAGMENT) as usize,
            record.len() - HEADER,
            "record mark"
        );
        ReplyReader {
            buf: record,
            pos: HEADER + 24,
        }
    }
    fn word_at(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.buf[at..at + 4].try_into().unwrap())
    }
    /// The xid replied to.
    pub fn xid(&self) -> u32 {
        self.word_at(HEADER)
    }
    /// reply_stat: 0 accepted, 1 denied.
    pub fn reply_stat(&self) -> u32 {
        self.word_at(HEADER + 8)
    }
    /// accept_stat of an accepted reply.
    pub fn accept_stat(&self) -> u32 {
        assert_eq!(self.reply_stat(), 0, "accepted");
        self.word_at(HEADER + 20)
    }
    /// Bytes of results not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// The NFS status (the first result of an accepted, successful call).
    pub fn status(&mut self) -> u32 {
        assert_eq!(self.accept_stat(), 0, "SUCCESS");
        self.u32()
    }
    /// A 32-bit word.
    pub fn u32(&mut self) -> u32 {
        let w = self.word_at(self.pos);
        self.pos += 4;
        w
    }
    /// A 64-bit word.
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) << 32 | self.u32() as u64
    }
    /// Variable-length opaque bytes.
    pub fn opaque(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        let v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n.div_ceil(4) * 4;
        v
    }
    /// A value of an `nfsserve` XDR type.
    pub fn decode<T: XDR + Default>(&mut self) -> T {
        let mut c = std::io::Cursor::new(&self.buf[self.pos..]);
        let mut v = T::default();
        v.deserialize(&mut c).unwrap();
        self.pos += c.position() as usize;
        v
    }
    /// Attributes.
    pub fn fattr(&mut self) -> fattr3 {
        self.decode()
    }
    /// post_op_attr.
    pub fn post_attr(&mut self) -> Option<fattr3> {
        match self.u32() {
            0 => None,
            1 => Some(self.fattr()),
            b => panic!("bad post_op_attr discriminant {b}"),
        }
    }
    /// wcc_data: (before, after).
    pub fn wcc(&mut self) -> (Option<wcc_attr>, Option<fattr3>) {
        let before = match self.u32() {
            0 => None,
            _ => Some(self.decode()),
        };
        (before, self.post_attr())
    }
    /// post_op_fh3.
    pub fn post_fh(&mut self) -> Option<nfs_fh3> {
        match self.u32() {
            0 => None,
            _ => Some(nfs_fh3 {
                data: self.opaque(),
            }),
        }
    }
}

/// An appliance on a fresh device set, its export, and a dispatcher to call.
pub struct Harness {
    pub fx: Fixture,
    pub app: Arc<Appliance>,
    pub export: Export,
    pub dispatcher: Dispatcher,
    xid: std::sync::atomic::AtomicU32,
}

/// The client address the harness calls from.
pub const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

impl Harness {
    fn with(fx: Fixture, app: Arc<Appliance>) -> Harness {
        let export = Export::new(app.clone());
        Harness {
            dispatcher: Dispatcher::new(export.clone()),
            export,
            app,
            fx,
            xid: 1.into(),
        }
    }

    /// A locked appliance on a 64 MiB device.
    pub fn locked() -> Harness {
        let fx = Fixture::new(64 << 20);
        let app = fx.appliance(true);
        Harness::with(fx, app)
    }

    /// An unlocked appliance on a 64 MiB device.
    pub fn unlocked() -> Harness {
        Harness::unlocked_with(64 << 20)
    }

    /// An unlocked appliance on a device of `size` bytes.
    pub fn unlocked_with(size: u64) -> Harness {
        let fx = Fixture::new(size);
        let app = fx.unlocked();
        Harness::with(fx, app)
    }

    /// Unlocks the appliance.
    pub fn unlock(&self) {
        self.app.unlock(&self.fx.code).unwrap();
    }

    /// The root directory's id.
    pub fn root(&self) -> u64 {
        odt_store::engine::namespace::ROOT
    }

    /// The handle of `id`.
    pub fn fh(&self, id: u64) -> nfs_fh3 {
        self.export.handle_of(id)
    }

    /// The file id behind a handle.
    pub fn id(&self, fh: &nfs_fh3) -> u64 {
        self.export.id_of(fh).unwrap()
    }

    /// Sends a raw request record; the reply record, if any.
    pub async fn send(&self, record: Vec<u8>) -> Option<Vec<u8>> {
        let out = self.dispatcher.dispatch(CLIENT, record).await;
        if let Some(b) = out.background {
            b.await.unwrap();
        }
        out.reply
    }

    /// Calls `procedure` of `program` with `args` (a fresh xid each time).
    pub async fn call(&self, program: u32, procedure: u32, args: Args) -> ReplyReader {
        let xid = self.xid.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reply = self
            .send(call_record(xid, program, procedure, args.bytes()))
            .await
            .expect("a reply");
        let r = ReplyReader::new(reply);
        assert_eq!(r.xid(), xid);
        r
    }

    /// Calls NFSv3 `procedure`.
    pub async fn nfs(&self, procedure: u32, args: Args) -> ReplyReader {
        self.call(NFS_PROGRAM, procedure, args).await
    }

    /// Calls MOUNT v3 `procedure`.
    pub async fn mount(&self, procedure: u32, args: Args) -> ReplyReader {
        self.call(MOUNT_PROGRAM, procedure, args).await
    }

    /// Creates file `name` in `dir` (UNCHECKED, no attributes); its id.
    pub async fn create_file(&self, dir: u64, name: &str) -> u64 {
        let mut r = self
            .nfs(
                nfs3::CREATE,
                Args::new()
                    .fh(&self.fh(dir))
                    .text(name)
                    .u32(0)
                    .sattr(&sattr3::default()),
            )
            .await;
        assert_eq!(r.status(), 0, "CREATE {name}");
        let fh = r.post_fh().expect("a handle");
        self.id(&fh)
    }

    /// Makes directory `name` in `dir`; its id.
    pub async fn mkdir(&self, dir: u64, name: &str) -> u64 {
        let mut r = self
            .nfs(
                nfs3::MKDIR,
                Args::new()
                    .fh(&self.fh(dir))
                    .text(name)
                    .sattr(&sattr3::default()),
            )
            .await;
        assert_eq!(r.status(), 0, "MKDIR {name}");
        let fh = r.post_fh().expect("a handle");
        self.id(&fh)
    }

    /// Removes file `name` from `dir`.
    pub async fn remove(&self, dir: u64, name: &str) {
        let mut r = self
            .nfs(nfs3::REMOVE, Args::new().fh(&self.fh(dir)).text(name))
            .await;
        assert_eq!(r.status(), 0, "REMOVE {name}");
    }

    /// Writes `data` at `offset` of `id` with `stable` (0 UNSTABLE, 2 FILE_SYNC); the status.
    pub async fn write(&self, id: u64, offset: u64, stable: u32, data: &[u8]) -> u32 {
        let mut r = self
            .nfs(
                nfs3::WRITE,
                Args::new()
                    .fh(&self.fh(id))
                    .u64(offset)
                    .u32(data.len() as u32)
                    .u32(stable)
                    .opaque(data),
            )
            .await;
        r.status()
    }

    /// Reads up to `count` bytes at `offset` of `id`: (data, eof).
    pub async fn read(&self, id: u64, offset: u64, count: u32) -> (Vec<u8>, bool) {
        let mut r = self
            .nfs(
                nfs3::READ,
                Args::new().fh(&self.fh(id)).u64(offset).u32(count),
            )
            .await;
        assert_eq!(r.status(), 0, "READ");
        r.post_attr();
        let _count = r.u32();
        let eof = r.u32() == 1;
        (r.opaque(), eof)
    }
}
