//! Hostile clients against the real appliance: one-request crashes (lengths announcing
//! gigabytes in every variable-length field, random garbage), a thousand idle and half-open
//! connections, and retransmissions after a reconnect. The process never dies, its peak RSS
//! stays under 256 MiB, and a normal client (libnfs's `nfs-cp`) is still served.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::nfsclient::{manifest, nfs_cat_to, nfs_cp_ok, nfs_ls, require_clients};
use odt_test_support::rpc::{
    LAST_FRAGMENT, MOUNT_PROGRAM, NFS_PROGRAM, Xdr, call, closed_within, exchange, record, stats,
    word,
};

const LIMIT_KIB: u64 = 256 * 1024;
const ANSWER: Duration = Duration::from_secs(10);

/// A call header up to the credential's flavor, then `rest` as it is.
fn header_then(xid: u32, program: u32, procedure: u32, flavor: u32, rest: &[u8]) -> Vec<u8> {
    let mut v = Xdr::new();
    for w in [xid, 0, 2, program, 3, procedure, flavor] {
        v = v.u32(w);
    }
    v.raw(rest).0
}

/// Each request shape that once cost memory in proportion to what it announced.
fn hostile_shapes() -> Vec<(&'static str, Vec<u8>)> {
    let gib = 1u32 << 30;
    let sys_cred = |machine_len: u32, groups: u32| {
        Xdr::new()
            .u32(20)
            .u32(0)
            .u32(machine_len)
            .u32(0)
            .u32(0)
            .u32(groups)
            .0
    };
    vec![
        (
            "credential of 256 MiB",
            header_then(1, NFS_PROGRAM, 1, 0, &(256u32 << 20).to_be_bytes()),
        ),
        (
            "credential of 1 GiB",
            header_then(2, NFS_PROGRAM, 1, 0, &gib.to_be_bytes()),
        ),
        (
            "credential of 4 GiB",
            header_then(3, NFS_PROGRAM, 1, 1, &u32::MAX.to_be_bytes()),
        ),
        (
            "AUTH_SYS with 64 Mi groups",
            header_then(4, NFS_PROGRAM, 1, 1, &sys_cred(0, 64 << 20)),
        ),
        (
            "AUTH_SYS machine name of 1 GiB",
            header_then(5, NFS_PROGRAM, 1, 1, &{
                let mut c = Xdr::new().u32(400).u32(0).u32(gib).0;
                c.resize(4 + 400, 0);
                c
            }),
        ),
        (
            "verifier of 1 GiB",
            header_then(6, NFS_PROGRAM, 1, 0, &Xdr::new().u32(0).u32(0).u32(gib).0),
        ),
        (
            "READ handle of 512 MiB",
            call(7, NFS_PROGRAM, 6, &Xdr::new().u32(512 << 20).0),
        ),
        (
            "GETATTR handle of 4 GiB",
            call(8, NFS_PROGRAM, 1, &Xdr::new().u32(u32::MAX).0),
        ),
        (
            "LOOKUP name of 1 GiB",
            call(9, NFS_PROGRAM, 3, &Xdr::new().u32(0).u32(gib).0),
        ),
        (
            "SYMLINK path of 1 GiB",
            call(10, NFS_PROGRAM, 10, &{
                let mut a = Xdr::new().u32(0).u32(1).raw(b"l\0\0\0");
                for _ in 0..6 {
                    a = a.u32(0);
                }
                a.u32(gib).0
            }),
        ),
        (
            "WRITE payload of 4 GiB",
            call(11, NFS_PROGRAM, 7, &{
                let mut a = Xdr::new().u32(0).u64(0).u32(u32::MAX).u32(0).u32(u32::MAX);
                a = a.raw(&[0; 64]);
                a.0
            }),
        ),
        (
            "MNT path of 1 GiB",
            call(12, MOUNT_PROGRAM, 1, &Xdr::new().u32(gib).0),
        ),
        (
            "RENAME second name of 1 GiB",
            call(13, NFS_PROGRAM, 14, &{
                Xdr::new().u32(0).opaque(b"a").u32(0).u32(gib).0
            }),
        ),
    ]
}

fn alive(app: &Appliance) -> bool {
    std::path::Path::new(&format!("/proc/{}", app.pid())).exists()
}

/// Sends every shape on its own connection: each gets a refusal or a closed connection.
fn send_shapes(port: u16) {
    for (what, msg) in hostile_shapes() {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        match exchange(&mut s, &msg, ANSWER) {
            Some(reply) => {
                let (reply_stat, stat) = stats(&reply);
                assert!(
                    reply_stat == 1 || stat == 4 || (stat == 0 && word(&reply, 24) == 63),
                    "{what}: answered {reply_stat}/{stat}, not a refusal"
                );
            }
            None => assert!(
                closed_within(&mut s, ANSWER),
                "{what}: no answer, not closed"
            ),
        }
    }
    // A record mark announcing 2 GiB.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&(LAST_FRAGMENT | 0x7fff_ffff).to_be_bytes())
        .unwrap();
    assert!(closed_within(&mut s, ANSWER), "2 GiB record not refused");
}

/// Random records and random unframed bytes.
fn send_garbage(port: u16, seed: u64) {
    use rand::{Rng, RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        for _ in 0..50 {
            let mut msg = vec![0u8; rng.random_range(0..4096)];
            rng.fill_bytes(&mut msg);
            // Half of them look like calls up to the program number.
            if msg.len() >= 16 && rng.random_bool(0.5) {
                msg[4..8].copy_from_slice(&0u32.to_be_bytes());
                msg[8..12].copy_from_slice(&2u32.to_be_bytes());
                msg[12..16].copy_from_slice(&NFS_PROGRAM.to_be_bytes());
            }
            if s.write_all(&record(&msg)).is_err() {
                break;
            }
        }
        let mut raw = vec![0u8; 8192];
        rng.fill_bytes(&mut raw);
        let _ = s.write_all(&raw);
    }
}

/// Copies a file in with nfs-cp and reads it back with nfs-cat.
fn normal_client_round_trip(app: &Appliance, job: &Job, name: &str) {
    let src = job.path(&format!("{name}.src"));
    let data: Vec<u8> = (0..(3 << 20) + 123).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    nfs_cp_ok(
        &src.to_string_lossy(),
        &app.url_file(name),
        Duration::from_secs(60),
    );
    let back = job.path(&format!("{name}.back"));
    nfs_cat_to(&app.url_file(name), &back, Duration::from_secs(60));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "{name} read back differs"
    );
}

#[test]
fn one_request_shapes_and_garbage_neither_kill_nor_bloat_the_server() {
    require_clients();
    let job = Job::provision("2G", 1, &[]);
    let app = Appliance::start(&job, Options::default());
    // Locked: no unlock, no mount needed to try.
    send_shapes(app.nfs_port);
    send_garbage(app.nfs_port, 1);
    assert!(alive(&app), "the appliance died:\n{}", app.log_text());
    app.unlock();
    send_shapes(app.nfs_port);
    send_garbage(app.nfs_port, 2);
    assert!(alive(&app), "the appliance died:\n{}", app.log_text());
    normal_client_round_trip(&app, &job, "after-garbage.bin");
    let peak = app.peak_rss_kib();
    eprintln!("nfs_hostile: peak RSS {} MiB", peak / 1024);
    assert!(peak < LIMIT_KIB, "peak RSS {} MiB", peak / 1024);
}

/// Lets this process hold a few thousand sockets.
#[allow(unsafe_code)]
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    assert!(
        lim.rlim_cur >= 2200,
        "the open-file limit is {}",
        lim.rlim_cur
    );
}

#[test]
fn a_thousand_idle_and_half_open_connections_lock_nobody_out() {
    require_clients();
    raise_fd_limit();
    let job = Job::provision("2G", 1, &[]);
    let app = Appliance::start(&job, Options::default());
    app.unlock();
    let mut held = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(("127.0.0.1", app.nfs_port)).unwrap();
        if i % 2 == 1 {
            // Two bytes of a record mark, and nothing more.
            s.write_all(&[0x80, 0]).unwrap();
        }
        held.push(s);
    }
    normal_client_round_trip(&app, &job, "among-idle.bin");
    let listing = nfs_ls(&app.url_root());
    assert!(listing.status.success());
    let peak = app.peak_rss_kib();
    eprintln!(
        "nfs_hostile: peak RSS {} MiB with 1000 idle connections",
        peak / 1024
    );
    assert!(peak < LIMIT_KIB, "peak RSS {} MiB", peak / 1024);
    drop(held);
}

/// The root handle, from MNT.
fn root_handle(s: &mut TcpStream) -> Vec<u8> {
    let reply = exchange(
        s,
        &call(1, MOUNT_PROGRAM, 1, &Xdr::new().opaque(b"/").0),
        ANSWER,
    )
    .expect("MNT answered");
    assert_eq!((stats(&reply), word(&reply, 24)), ((0, 0), 0), "MNT /");
    let len = word(&reply, 28) as usize;
    reply[32..32 + len].to_vec()
}

/// The NFS status of a reply.
fn status(reply: &[u8]) -> u32 {
    assert_eq!(stats(reply), (0, 0), "accepted");
    word(reply, 24)
}

#[test]
fn retransmissions_after_a_reconnect_get_the_first_reply() {
    require_clients();
    let job = Job::provision("1G", 1, &[]);
    let app = Appliance::start(&job, Options::default());
    app.unlock();
    let connect = || TcpStream::connect(("127.0.0.1", app.nfs_port)).unwrap();
    let mut s = connect();
    let root = root_handle(&mut s);
    let unchecked_empty = |name: &[u8]| {
        let mut a = Xdr::new().opaque(&root).opaque(name).u32(0);
        for _ in 0..6 {
            a = a.u32(0);
        }
        a.0
    };
    for (xid, name) in [(10, &b"a"[..]), (11, b"b")] {
        let r = exchange(
            &mut s,
            &call(xid, NFS_PROGRAM, 8, &unchecked_empty(name)),
            ANSWER,
        );
        assert_eq!(status(&r.unwrap()), 0, "CREATE");
    }
    let remove = call(
        0x5eed_0001,
        NFS_PROGRAM,
        12,
        &Xdr::new().opaque(&root).opaque(b"a").0,
    );
    let rename = call(
        0x5eed_0002,
        NFS_PROGRAM,
        14,
        &Xdr::new()
            .opaque(&root)
            .opaque(b"b")
            .opaque(&root)
            .opaque(b"c")
            .0,
    );
    for msg in [remove, rename] {
        let first = exchange(&mut s, &msg, ANSWER).expect("answered");
        assert_eq!(status(&first), 0);
        // The connection drops before the client saw the reply; it reconnects and sends
        // the same call (same xid) again.
        drop(s);
        s = connect();
        let again = exchange(&mut s, &msg, ANSWER).expect("answered");
        assert_eq!(again, first, "the retransmission got another reply");
    }
    let m = manifest(&app.url_root(), Duration::from_secs(60));
    let names: Vec<&str> = m.lines().filter_map(|l| l.split(' ').nth(2)).collect();
    assert_eq!(names, ["c"], "{m}");
}
