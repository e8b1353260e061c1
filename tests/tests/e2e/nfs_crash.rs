//! SIGKILL of the appliance in the middle of a copy (a power cut, for the process): after a
//! restart and unlock, every file whose COMMIT the client saw is intact, the file the
//! crash cut reads back, a re-copy completes, and after `odt seal` the provider's
//! `odt verify --deep` finds every segment and record intact.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::bins;
use odt_e2e::nfsclient::{manifest, require_clients};
use odt_e2e::run::run;

const FILES: usize = 40;
const SIZE: usize = 3 << 20;

/// Runs the Python writer; returns the (name, sha256) of every file it reported committed
/// (its fsync, i.e. COMMIT, answered). With `kill_after = Some(n)`, SIGKILLs the appliance
/// soon after the writer reported `n` committed files, and still collects what the writer
/// reports until it gives up.
fn write_files(app: &mut Appliance, seed: u64, kill_after: Option<usize>) -> Vec<(String, String)> {
    let mut child = Command::new("python3")
        .arg(bins::repo().join("tests/py/nfstool.py"))
        .args([
            "writer",
            &app.url_root(),
            &FILES.to_string(),
            &SIZE.to_string(),
            &seed.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let mut w = line.split(' ');
            if w.next() == Some("committed") {
                let name = w.next().unwrap().to_string();
                let sum = w.next().unwrap().to_string();
                if tx.send((name, sum)).is_err() {
                    return;
                }
            }
        }
    });
    let mut committed = Vec::new();
    let mut killed_at = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(c) => committed.push(c),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if killed_at.is_none() && kill_after.is_some_and(|n| committed.len() >= n) {
            // Somewhere inside the next file's writes.
            std::thread::sleep(Duration::from_millis(150));
            app.kill();
            killed_at = Some(Instant::now());
        }
        if killed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            // The client lost its server and may retry forever: stop it, keep its reports.
            let _ = child.kill();
            while let Ok(c) = rx.recv_timeout(Duration::from_secs(1)) {
                committed.push(c);
            }
            break;
        }
    }
    let st = child.wait().unwrap();
    if kill_after.is_none() {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).ok();
        assert!(st.success(), "the writer failed ({st}): {err}");
    }
    committed
}

fn remote_sums(app: &Appliance) -> std::collections::BTreeMap<String, (String, u64)> {
    manifest(&app.url_root(), Duration::from_secs(300))
        .lines()
        .filter(|l| !l.starts_with("dir "))
        .map(|l| {
            let mut it = l.splitn(3, ' ');
            let sum = it.next().unwrap().to_string();
            let size = it.next().unwrap().parse().unwrap();
            (it.next().unwrap().to_string(), (sum, size))
        })
        .collect()
}

fn verify(job: &Job) {
    let mut cmd = Command::new(bins::odt());
    cmd.arg("verify");
    for d in &job.devices {
        cmd.arg("--device").arg(d);
    }
    cmd.arg("--job").arg(&job.job_dir).arg("--deep");
    let o = run(&mut cmd, None, Duration::from_secs(600));
    assert!(
        o.status.success(),
        "odt verify --deep failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn sigkill_mid_copy_loses_nothing_committed() {
    require_clients();
    let job = Job::provision("4G", 1, &["--segment-size", "16M"]);
    let mut app = Appliance::start(&job, Options::default());
    app.unlock();

    let committed = write_files(&mut app, 1, Some(8));
    assert!(
        committed.len() >= 8 && committed.len() < FILES,
        "{committed:?}"
    );
    app.start_again();
    assert_eq!(app.status()["state"], "locked");
    app.unlock();

    // Every file whose COMMIT was answered is intact; nothing else but the one file the
    // crash cut exists, and it reads back (whatever of it reached the disk, never garbage).
    let sums = remote_sums(&app);
    for (name, sum) in &committed {
        let got = sums
            .get(name)
            .unwrap_or_else(|| panic!("{name} was committed and is gone: {sums:?}"));
        assert_eq!(
            &got.0, sum,
            "{name} was committed and differs after the crash"
        );
        assert_eq!(got.1, SIZE as u64);
    }
    assert!(sums.len() <= committed.len() + 1, "{sums:?}");
    for (name, (_, size)) in &sums {
        assert!(*size <= SIZE as u64, "{name}: {size} bytes");
    }

    // The same copy again, from the start, completes; then everything is there.
    let again = write_files(&mut app, 1, None);
    assert_eq!(again.len(), FILES);
    assert_eq!(
        &again[..committed.len()],
        &committed[..],
        "the same seed writes the same files"
    );
    let sums = remote_sums(&app);
    assert_eq!(sums.len(), FILES);
    for (name, sum) in &again {
        assert_eq!(&sums[name].0, sum, "{name} after the re-copy");
    }
    // The customer seals; then the provider's keyless and keyed checks of every segment
    // and record on the devices pass.
    app.seal();
    app.stop();
    verify(&job);
}
