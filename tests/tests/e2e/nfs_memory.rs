//! Memory stays bounded: the appliance's peak RSS (VmHWM) stays under 256 MiB while
//! clients copy random (incompressible) data as fast as they can and, at the same time,
//! hostile clients announce 2 GiB requests, send endless fragment chains, or start large
//! requests and stall. The copies still complete byte for byte.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::nfsclient::{manifest, nfs_cp_ok, require_clients, sha256_file};
use odt_test_support::rpc::{Call, Xdr, closed_within, record_mark};

const LIMIT_KIB: u64 = 256 * 1024;

fn random_file(path: &std::path::Path, bytes: usize, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::fs::File::create(path).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..bytes >> 20 {
        rng.fill_bytes(&mut chunk);
        f.write_all(&chunk).unwrap();
    }
}

#[test]
fn rss_stays_bounded_under_load_and_oversized_requests() {
    require_clients();
    let job = Job::provision("8G", 1, &[]);
    let app = Appliance::start(&job, Options::default());
    app.unlock();
    let port = app.nfs_port;

    // Stallers: each starts a 1 MiB NFS WRITE (within the limit), sends half, and waits.
    let mut stalled = Vec::new();
    for xid in 0..40 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let args = Xdr::new()
            .opaque(&[0; 16])
            .u64(0)
            .u32(1 << 20)
            .u32(0)
            .u32(1 << 20)
            .into_bytes();
        let call = Call::nfs3(xid, 7).unix(0, 0).args(&args).message();
        let len = call.len() as u32 + (1 << 20);
        s.write_all(&record_mark(len, true)).unwrap();
        s.write_all(&call).unwrap();
        s.write_all(&vec![0x5a; 512 * 1024]).unwrap();
        stalled.push(s);
    }

    // Copies of incompressible data, two at a time.
    let sources: Vec<_> = (0..2)
        .map(|i| {
            let p = job.path(&format!("src{i}.bin"));
            random_file(&p, 400 << 20, 10 + i);
            p
        })
        .collect();
    let copies: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let src = p.to_string_lossy().into_owned();
            let dst = app.url_file(&format!("copy{i}.bin"));
            std::thread::spawn(move || nfs_cp_ok(&src, &dst, Duration::from_secs(900)))
        })
        .collect();

    // Meanwhile: announced 2 GiB requests and endless fragment chains, again and again.
    let started = Instant::now();
    let mut hostile = 0;
    while copies.iter().any(|c| !c.is_finished()) && started.elapsed() < Duration::from_secs(900) {
        let mut big = TcpStream::connect(("127.0.0.1", port)).unwrap();
        big.write_all(&record_mark(0x7fff_ffff, true)).unwrap();
        let _ = big.write_all(&vec![0xa5; 1 << 20]);
        assert!(
            closed_within(&mut big, Duration::from_secs(10)),
            "a 2 GiB request was not refused"
        );
        let mut chain = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let frag = {
            let mut f = record_mark(64 * 1024, false).to_vec();
            f.extend(vec![0x3c; 64 * 1024]);
            f
        };
        for _ in 0..40 {
            if chain.write_all(&frag).is_err() {
                break;
            }
        }
        assert!(
            closed_within(&mut chain, Duration::from_secs(10)),
            "an endless record was not refused"
        );
        hostile += 2;
        std::thread::sleep(Duration::from_millis(200));
    }
    for c in copies {
        c.join().expect("a copy failed");
    }
    let peak = app.peak_rss_kib();
    eprintln!(
        "nfs_memory: peak RSS {} MiB with {hostile} hostile connections and 40 stalled ones",
        peak / 1024
    );
    assert!(hostile > 0);
    assert!(
        peak < LIMIT_KIB,
        "peak RSS {} MiB is over 256 MiB",
        peak / 1024
    );
    assert!(
        app.log_text().contains("exceeds the limit"),
        "{}",
        app.log_text()
    );
    drop(stalled);

    let m = manifest(&app.url_root(), Duration::from_secs(600));
    for (i, p) in sources.iter().enumerate() {
        let want = format!("{} {} copy{i}.bin", sha256_file(p), 400u64 << 20);
        assert!(m.lines().any(|l| l == want), "copy{i}.bin differs:\n{m}");
    }
    let peak = app.peak_rss_kib();
    assert!(
        peak < LIMIT_KIB,
        "peak RSS {} MiB after reading back",
        peak / 1024
    );
}
