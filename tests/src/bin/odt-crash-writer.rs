//! Test helper for the crash tests: opens a store and writes from several threads, printing
//! `begin`/`ack` lines (see `odt_test_support::crash`) until it is killed.
//!
//! Usage: `odt-crash-writer CODE_FILE DEVICE...`; with `ODT_CRASH_CLEANER=1` in the
//! environment the store's background cleaner runs too (trials that kill it mid-clean).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use odt_store::{Access, Locked};
use odt_test_support::crash::{self as protocol, Event};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let code_file = args
        .next()
        .expect("usage: odt-crash-writer CODE_FILE DEVICE...");
    let devices: Vec<PathBuf> = args.map(PathBuf::from).collect();
    let code = std::fs::read_to_string(&code_file)?.trim().parse()?;
    let locked = Locked::open(&devices, Access::ReadWrite)?;
    let secrets = locked.secrets_from_code(&code)?;
    let store = Arc::new(locked.unlock(secrets, Access::ReadWrite)?);
    if std::env::var_os("ODT_CRASH_CLEANER").is_some_and(|v| v == "1") {
        store.start_cleaner()?;
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = |out: &Mutex<std::io::Stdout>, line: String| {
        let mut o = out.lock().unwrap();
        o.write_all(line.as_bytes()).unwrap();
        o.flush().unwrap();
    };
    say(&out, Event::Ready.line());
    std::thread::scope(|s| {
        for t in 0..protocol::THREADS {
            let store = store.clone();
            let out = out.clone();
            s.spawn(move || {
                let mut ids = Vec::new();
                for f in 0..protocol::FILES {
                    let name = protocol::file_name(t, f);
                    let id = match store.lookup(store.root(), name.as_bytes()) {
                        Ok(id) => id,
                        Err(_) => {
                            store
                                .create(store.root(), name.as_bytes(), 0o644)
                                .unwrap()
                                .id
                        }
                    };
                    ids.push(id);
                }
                for seq in 0.. {
                    let (file, offset, len) = protocol::plan(t, seq);
                    let data = protocol::data(t, seq, len);
                    say(
                        &out,
                        Event::Begin {
                            t,
                            seq,
                            file,
                            offset,
                            len,
                        }
                        .line(),
                    );
                    store.write(ids[file as usize], offset, &data).unwrap();
                    say(&out, Event::Ack { t, seq }.line());
                }
            });
        }
    });
    Ok(())
}
