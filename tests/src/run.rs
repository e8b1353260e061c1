//! Running external commands with a time limit and readable failures.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion (stdin: `input` or nothing) and kills it after `limit`.
pub fn run(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("piped");
        // A command that does not read its stdin may be gone already (EPIPE): its exit
        // status tells what happened.
        let _ = stdin.write_all(data);
    }
    // Drain the pipes in threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for a child") {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // ODT_TEST_TIMES=1: where a slow test spends its time, command by command.
    if std::env::var_os("ODT_TEST_TIMES").is_some() {
        eprintln!("[{:.2}s] {what}", started.elapsed().as_secs_f64());
    }
    Output {
        status,
        stdout: t_out.join().expect("stdout reader"),
        stderr: t_err.join().expect("stderr reader"),
    }
}

/// Runs `cmd` and returns its stdout; panics with both outputs if it fails.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> String {
    let what = describe(cmd);
    let o = run(cmd, None, limit);
    if !o.status.success() {
        panic!(
            "`{what}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a finished command printed, stdout then stderr, as text (for assertion messages
/// and for searching either stream).
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
