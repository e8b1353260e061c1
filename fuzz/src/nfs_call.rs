//! The appliance's NFS and MOUNT request decoding, end to end: the fuzzer's bytes are one
//! request record (after the record mark) handed to the real dispatcher of an unlocked
//! appliance on a small image file, exactly as a connection would hand it.
//!
//! Contracts: no panic, no allocation sized by the input beyond the record itself (libFuzzer's
//! `-rss_limit_mb` catches that), and every reply is one well-formed record whose xid is
//! the call's.
//!
//! Modes (first byte): raw — the bytes as they are; call — a valid NFSv3 or MOUNT v3 call
//! header (AUTH_NONE) for a fuzzer-chosen procedure, followed by the rest as its arguments,
//! so the fuzzer reaches every procedure's argument decoder; handle — the same with the
//! root directory's handle first (handles carry the device set's random id, which the
//! fuzzer would not guess), so it reaches the procedures behind the handle check.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use odt_appliance::nfs::{Dispatcher, Export};
use odt_appliance::state::Appliance;

const LAST_FRAGMENT: u32 = 1 << 31;

struct Fixture {
    _dir: std::path::PathBuf,
    runtime: tokio::runtime::Runtime,
    dispatcher: Dispatcher,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("odt-fuzz-nfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = vec![dir.join("dev0.img")];
        let _ = std::fs::remove_file(&paths[0]);
        let identity = age::x25519::Identity::generate();
        let opts = odt_store::trip::provision::Options {
            create_size: Some(64 << 20),
            segment_size: 8 << 20,
            ..Default::default()
        };
        let p = odt_store::trip::provision::provision(
            &paths,
            "fuzz",
            "fuzz",
            &identity.to_public(),
            &opts,
        )
        .unwrap();
        let app = Appliance::open(&paths, false).unwrap();
        app.unlock(&p.unlock_code).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Fixture {
            _dir: dir,
            runtime,
            dispatcher: Dispatcher::new(Export::new(std::sync::Arc::new(app))),
        }
    })
}

/// One fuzz input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let msg = if mode % 4 == 0 || rest.len() < 2 {
        rest.to_vec()
    } else {
        let (program, procedure) = if rest[0] % 4 == 0 {
            (100005u32, (rest[1] % 7) as u32)
        } else {
            (100003, (rest[1] % 23) as u32)
        };
        let mut m = Vec::new();
        for w in [0x0d7_f022u32, 0, 2, program, 3, procedure, 0, 0, 0, 0] {
            m.extend_from_slice(&w.to_be_bytes());
        }
        if mode % 4 == 3 {
            let fh = f
                .dispatcher
                .export()
                .handle_of(odt_store::engine::ROOT)
                .data;
            m.extend_from_slice(&(fh.len() as u32).to_be_bytes());
            m.extend_from_slice(&fh);
        }
        m.extend_from_slice(&rest[2..]);
        m
    };
    if msg.len() > (1 << 20) + 64 * 1024 {
        return;
    }
    let mut record = (LAST_FRAGMENT | msg.len() as u32).to_be_bytes().to_vec();
    record.extend_from_slice(&msg);
    let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let out = f.runtime.block_on(async {
        let out = f.dispatcher.dispatch(client, record).await;
        if let Some(b) = out.background {
            let _ = b.await;
        }
        out.reply
    });
    if let Some(reply) = out {
        assert!(reply.len() >= 4 + 12, "a reply shorter than a reply header");
        let mark = u32::from_be_bytes(reply[..4].try_into().unwrap());
        assert_eq!(
            mark,
            LAST_FRAGMENT | (reply.len() - 4) as u32,
            "record mark"
        );
        assert_eq!(&reply[4..8], &msg[..4], "the reply's xid is the call's");
    }
}
