//! `odt ingest` killed with SIGKILL at random moments, then run again: every file under its
//! final name is always complete, and the resumed ingest ends with exactly the tree an
//! uninterrupted ingest writes, without redoing the files finished before the kill.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use odt_test_support::prelude::*;

/// The comparable facts of one datastore entry.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    File {
        mode: u32,
        mtime: (i64, i64),
        hash: String,
    },
    Link(std::path::PathBuf),
}

fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    walk(root)
        .into_iter()
        .map(|(rel, m)| {
            let p = root.join(&rel);
            let e = if m.file_type().is_symlink() {
                Entry::Link(std::fs::read_link(&p).unwrap())
            } else if m.is_dir() {
                Entry::Dir {
                    mode: m.mode() & 0o7777,
                    mtime: (m.mtime(), m.mtime_nsec()),
                }
            } else {
                let mut h = blake3::Hasher::new();
                h.update_reader(std::fs::File::open(&p).unwrap()).unwrap();
                Entry::File {
                    mode: m.mode() & 0o7777,
                    mtime: (m.mtime(), m.mtime_nsec()),
                    hash: h.finalize().to_hex().to_string(),
                }
            };
            (rel, e)
        })
        .collect()
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_same_result() {
    let setup = Setup::new(1, 2048 * MIB);
    {
        let store = setup.open_rw();
        let mut b = Builder::new(&store);
        b.mkdir(b"vm", 0o755, None);
        b.file(b"vm/vm.ovf", 0o644, 4000, vec![(0, pattern(1, 4000))], None);
        b.file(
            b"vm/vm-disk1.vmdk",
            0o600,
            64 * MIB,
            vec![(0, pattern(2, 64 * MIB as usize))],
            None,
        );
        b.file(
            b"vm/vm-disk2.vmdk",
            0o644,
            GIB,
            vec![
                (0, pattern(3, MIB as usize)),
                (GIB / 2, pattern(4, 2 * MIB as usize)),
            ],
            None,
        );
        b.symlink(b"vm/latest.vmdk", b"vm-disk1.vmdk", None);
        for d in 0..4u64 {
            let dir = format!("logs{d}");
            b.mkdir(dir.as_bytes(), 0o750, None);
            for f in 0..50u64 {
                let len = 1000 + ((d * 50 + f) * 7919) % 60_000;
                b.file(
                    format!("{dir}/f{f}.log").as_bytes(),
                    0o640,
                    len,
                    vec![(0, pattern(100 + d * 50 + f, len as usize))],
                    None,
                );
            }
        }
        seal(&store);
    }
    let total_files = 3 + 200;

    // The uninterrupted ingest is the reference.
    let reference = setup.dir.path().join("reference");
    let t0 = Instant::now();
    let o = setup.ingest(&reference, &[]);
    let full = t0.elapsed();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let want = snapshot(&reference);
    assert_eq!(want.len(), 4 + 1 + 3 + 1 + 200);

    let mut rng = odt_test_support::data::XorShift::new(0x5eed_0dd5_1234_5678);
    let mut resumed_total = 0;
    // Kills after which no, some, or every file was already under its final name.
    let (mut none_done, mut some_done, mut all_done) = (0, 0, 0);
    let trials = 12;
    for trial in 0..trials {
        let ds = setup.dir.path().join(format!("ds{trial}"));
        let mut complete_files = 0;
        // One kill, or two in a row for odd trials.
        for _ in 0..1 + trial % 2 {
            complete_files = 0;
            let mut args: Vec<String> = vec![
                "ingest".into(),
                "--job".into(),
                setup.job.display().to_string(),
                "--to".into(),
                ds.display().to_string(),
            ];
            args.extend(setup.device_args());
            let mut child = Command::new(odt_bin())
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let at =
                Duration::from_micros(rng.next_u64() % (full.as_micros() as u64 * 13 / 10 + 1));
            std::thread::sleep(at);
            // Child::kill sends SIGKILL on Unix.
            let _ = child.kill();
            child.wait().unwrap();
            // Whatever is under its final name is complete and correct.
            if ds.exists() {
                for (rel, e) in snapshot(&ds) {
                    if let Entry::File { hash, .. } = &e {
                        match want.get(&rel) {
                            Some(Entry::File { hash: h, .. }) => {
                                assert_eq!(
                                    hash, h,
                                    "trial {trial}: {rel} is under its final name but \
                                     incomplete (killed after {at:?})"
                                );
                                complete_files += 1;
                            }
                            other => panic!("trial {trial}: unexpected file {rel}: {other:?}"),
                        }
                    }
                }
            }
        }
        let o = setup.ingest(&ds, &[]);
        let r = json(&o);
        assert_eq!(code(&o), 0, "trial {trial}: {r:#}\n{}", stderr(&o));
        match complete_files {
            0 => none_done += 1,
            n if n < total_files => some_done += 1,
            _ => all_done += 1,
        }
        assert_eq!(
            r["files_written"].as_u64().unwrap() + r["files_resumed"].as_u64().unwrap(),
            total_files
        );
        resumed_total += r["files_resumed"].as_u64().unwrap();
        assert_eq!(snapshot(&ds), want, "trial {trial}: resumed tree differs");
        let tmp = ds.join(".odt-ingest/tmp");
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "temporaries left"
        );
    }
    // The kills landed at different stages; some of them after files were finished, which
    // the resumed runs did not redo.
    eprintln!(
        "{trials} trials, full ingest {full:?}: after the last kill of a trial, no file was \
         done in {none_done}, some in {some_done}, all in {all_done}; the resumed runs \
         skipped {resumed_total} finished files"
    );
    assert!(
        resumed_total > 0,
        "no trial resumed anything (kills all too early?)"
    );
}
