//! The control API over HTTPS with the real binaries and clients written by others: `curl`
//! (public status without a session, a wrong code refused, another pinned key refused), `odt`
//! (a session after unlock: status, bundles and seal with no code; --json errors with stable
//! kinds and exit codes; the seal code in status after the seal; `odt bom` before and after
//! it), idle or half-open connections that must not lock the customer out, and TLS
//! connections holding buffered requests up to the limits, which must keep memory bounded.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::bins;
use odt_e2e::run::run;

const MIN: Duration = Duration::from_secs(60);

use odt_e2e::run::text;

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON on stdout ({e}):\n{}", text(o)))
}

fn need_curl() {
    let ok = Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "curl is needed (Debian package curl; scripts/install-test-deps)"
    );
}

/// The SPKI pin job.toml records (`tls_spki_pin`), for curl's --pinnedpubkey.
fn spki_pin(job: &Job) -> String {
    let t = std::fs::read_to_string(job.job_dir.join("job.toml")).unwrap();
    t.lines()
        .find_map(|l| l.trim().strip_prefix("tls_spki_pin = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("job.toml records the public-key pin")
}

/// `curl` pinned to `pin` (no CA: -k leaves the trust to the pin).
fn curl(pin: &str, args: &[&str]) -> Output {
    let mut c = Command::new("curl");
    c.args(["-sS", "-k", "--max-time", "30", "--pinnedpubkey"])
        .arg(format!("sha256//{pin}"))
        .args(args);
    run(&mut c, None, MIN)
}

fn url(app: &Appliance, path: &str) -> String {
    format!("https://{}{path}", app.control)
}

#[test]
fn curl_sees_public_fields_only_and_is_refused_a_wrong_code_or_key() {
    need_curl();
    let job = Job::provision("1G", 1, &["--segment-size", "8M"]);
    let app = Appliance::start(&job, Options::default());
    let pin = spki_pin(&job);

    let o = curl(&pin, &[&url(&app, "/api/v1/status")]);
    assert!(o.status.success(), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["state"], "locked", "{v}");
    assert_eq!(v["fingerprint"], job.fingerprint.as_str(), "{v}");
    assert!(v.get("store").is_none(), "{v}");

    // A wrong code: 403, kind wrong-code, still locked.
    let wrong = r#"{"code":"AAAAA-BBBBB-CCCCC-DDDDD"}"#;
    let o = curl(
        &pin,
        &[
            "-w",
            "\n%{http_code}",
            "-d",
            wrong,
            &url(&app, "/api/v1/unlock"),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap();
    assert_eq!(code, "403", "{out}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["kind"], "wrong-code", "{v}");

    // Unlock with the right code: a session token; status with it shows the store.
    let code = std::fs::read_to_string(&job.code_file).unwrap();
    let code = code.lines().find(|l| !l.starts_with('#')).unwrap().trim();
    let o = curl(
        &pin,
        &[
            "-d",
            &format!(r#"{{"code":"{code}"}}"#),
            &url(&app, "/api/v1/unlock"),
        ],
    );
    let v = json(&o);
    assert_eq!(v["state"], "unlocked", "{v}");
    let token = v["session"]["token"].as_str().unwrap().to_string();
    let o = curl(
        &pin,
        &[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &url(&app, "/api/v1/status"),
        ],
    );
    let v = json(&o);
    assert_eq!(v["signed_in"], true, "{v}");
    assert_eq!(v["store"]["files"], 0, "{v}");
    let v = json(&curl(&pin, &[&url(&app, "/api/v1/status")]));
    assert!(
        v.get("store").is_none(),
        "without the token: public fields only: {v}"
    );
    let o = curl(
        &pin,
        &[
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &url(&app, "/api/v1/bundles"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "401");

    // A client pinning another key is refused before any byte of HTTP (curl exit 90).
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let o = curl(other, &[&url(&app, "/api/v1/status")]);
    assert_eq!(o.status.code(), Some(90), "{}", text(&o));
    // And so is odt pinning another certificate: exit 6, kind fingerprint-mismatch.
    let o = run(
        Command::new(bins::odt()).args([
            "status",
            "--json",
            "--appliance",
            &app.control.to_string(),
            "--fingerprint",
            &"ab".repeat(32),
        ]),
        None,
        MIN,
    );
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["error"]["kind"], "fingerprint-mismatch", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&job.fingerprint),
        "the message names the certificate presented: {v}"
    );
}

#[test]
fn a_session_after_unlock_serves_status_bundles_and_seal_without_the_code() {
    let job = Job::provision("1G", 1, &["--segment-size", "8M"]);
    let mut app = Appliance::start(&job, Options::default());

    // --json failures: one object with error.kind, non-zero exit.
    let wrong = job.path("wrong-code");
    std::fs::write(&wrong, "AAAAA-BBBBB-CCCCC-DDDDD\n").unwrap();
    let o = run(
        app.odt(&[
            "unlock",
            "--json",
            "--fingerprint",
            &app.fingerprint,
            "--code-file",
        ])
        .arg(&wrong),
        None,
        MIN,
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_eq!(json(&o)["error"]["kind"], "wrong-code");
    let o = run(&mut app.odt(&["seal", "--json"]), None, MIN);
    assert_eq!(
        o.status.code(),
        Some(2),
        "no fingerprint, no session: {}",
        text(&o)
    );
    assert_eq!(json(&o)["error"]["kind"], "usage");
    let o = run(
        Command::new(bins::odt()).args([
            "status",
            "--json",
            "--appliance",
            "127.0.0.1:1",
            "--fingerprint",
            &app.fingerprint,
        ]),
        None,
        MIN,
    );
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_eq!(json(&o)["error"]["kind"], "unreachable");

    // Unlock once; then no code anywhere (stdin empty, no --code-file).
    let out = app.unlock();
    assert!(out.contains("Signed in"), "{out}");
    // The session: one file named by the pinned certificate, 0600 in a 0700 directory.
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = job.path("runtime").join("odt");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(mode(&files[0].path()), 0o600);
        let t = std::fs::read_to_string(files[0].path()).unwrap();
        assert!(t.contains("token"), "{t}");
    }
    let o = run(&mut app.odt(&["status", "--json"]), None, MIN);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json(&o)["store"]["dirs"], 1);
    let o = run(&mut app.odt(&["bundles", "--json"]), None, MIN);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&mut app.odt(&["bom", "--json"]), None, MIN);
    assert_eq!(
        o.status.code(),
        Some(7),
        "no BOM before the seal: {}",
        text(&o)
    );
    assert_eq!(json(&o)["error"]["kind"], "not-sealed");
    let o = run(&mut app.odt(&["seal", "--json"]), None, MIN);
    assert!(o.status.success(), "{}", text(&o));
    let seal_code = json(&o)["seal_code"].as_str().unwrap().to_string();

    // The seal ended the session: status shows the public fields, with the seal code and time.
    let o = run(&mut app.odt(&["status"]), None, MIN);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains(&format!("Seal code: {seal_code}")), "{t}");
    assert!(t.contains("Not signed in"), "{t}");
    let o = run(&mut app.odt(&["bundles", "--json"]), None, MIN);
    assert_eq!(
        o.status.code(),
        Some(4),
        "the session ended at the seal: {}",
        text(&o)
    );
    assert_eq!(json(&o)["error"]["kind"], "unauthenticated");
    let o = run(&mut app.odt(&["bom", "--json"]), None, MIN);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert_eq!(json(&o)["error"]["kind"], "unauthenticated");
    // The token went with it; the pin stays (the status above needed no --fingerprint).
    for f in std::fs::read_dir(job.path("runtime").join("odt"))
        .unwrap()
        .flatten()
    {
        let t = std::fs::read_to_string(f.path()).unwrap();
        assert!(!t.contains("token"), "a token left after the seal: {t}");
    }

    // Restarted, the appliance is locked but still shows its seal code and time to anyone
    // (the seal record needs no key).
    app.restart();
    let o = run(&mut app.odt(&["status", "--json"]), None, MIN);
    assert!(o.status.success(), "{}", text(&o));
    let v = json(&o);
    assert_eq!(v["seal"]["seal_code"], seal_code.as_str(), "{v}");
    assert!(
        v["seal"]["sealed_unix"].as_i64().unwrap() > 1_700_000_000,
        "{v}"
    );
    assert!(v.get("store").is_none(), "{v}");

    // The custody log, signed with the seal: the wrong code tried while locked, the unlock,
    // the seal request; `odt seal-check` shows it without the data key.
    app.stop();
    let mut c = Command::new(bins::odt());
    c.args(["seal-check", "--json", "--job"]).arg(&job.job_dir);
    for d in &job.devices {
        c.arg("--device").arg(d);
    }
    let o = run(&mut c, None, MIN);
    assert!(o.status.success(), "{}", text(&o));
    let v = json(&o);
    let whats: Vec<&str> = v["custody"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        whats,
        ["started", "wrong-code", "code-accepted", "seal-requested"],
        "{v}"
    );
    assert_eq!(v["custody"]["events"][1]["from"], "127.0.0.1");
}

/// Opens `n` TCP connections to `to` that send `first` and then nothing.
fn jam(to: SocketAddr, n: usize, first: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let s = TcpStream::connect(to).unwrap();
            if !first.is_empty() {
                (&s).write_all(first).unwrap();
            }
            s
        })
        .collect()
}

#[test]
fn idle_and_half_open_connections_do_not_lock_the_customer_out() {
    let job = Job::provision("1G", 1, &["--segment-size", "8M"]);
    let app = Appliance::start(&job, Options::default());
    let ctl = app.control;
    // 32 idle connections and 8 that sent half a TLS record header.
    let idle = jam(ctl, 32, b"");
    let half = jam(ctl, 8, &[0x16, 0x03]);
    let started = Instant::now();
    app.unlock();
    let o = run(&mut app.odt(&["status", "--json"]), None, MIN);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&mut app.odt(&["seal", "--json"]), None, MIN);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "unlock, status and seal took {:?} next to 40 idle connections",
        started.elapsed()
    );
    drop((idle, half));
    // Let the appliance see them close, so that the next 60 meet the limit whole.
    std::thread::sleep(Duration::from_secs(1));

    // Past the per-address limit: an honest answer, not "bad greeting".
    let many = jam(ctl, 60, b"");
    // Let the appliance accept them all first.
    std::thread::sleep(Duration::from_millis(500));
    let o = run(&mut app.odt(&["status", "--json"]), None, MIN);
    assert_eq!(o.status.code(), Some(5), "{}\n{}", text(&o), app.log_text());
    let v = json(&o);
    assert_eq!(v["error"]["kind"], "busy", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("too many"),
        "{v}"
    );
    drop(many);
    // Once they are gone, it answers again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = run(&mut app.odt(&["status", "--json"]), None, MIN);
        if o.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {}", text(&o));
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `tmux ARGS...`, panicking with its output unless it succeeds.
fn tmux(socket: &std::path::Path, args: &[&str]) -> String {
    let o = run(
        Command::new("tmux").arg("-S").arg(socket).args(args),
        None,
        MIN,
    );
    assert!(o.status.success(), "tmux {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_code_typed_on_a_terminal_is_not_echoed() {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "tmux is needed (Debian package tmux; scripts/install-test-deps)"
    );
    let job = Job::provision("1G", 1, &["--segment-size", "8M"]);
    let app = Appliance::start(&job, Options::default());
    let code = std::fs::read_to_string(&job.code_file).unwrap();
    let code = code
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .trim()
        .to_string();
    let socket = job.path("tmux.sock");
    let done = job.path("unlock.done");
    let cmd = format!(
        "XDG_RUNTIME_DIR={} {} unlock --appliance {} --fingerprint {}; echo EXIT=$? > {}; sleep 30",
        job.path("runtime").display(),
        bins::odt().display(),
        app.control,
        app.fingerprint,
        done.display()
    );
    tmux(
        &socket,
        &["new-session", "-d", "-x", "200", "-y", "20", &cmd],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tmux(&socket, &["capture-pane", "-p"]).contains("Unlock code:") {
        assert!(Instant::now() < deadline, "no prompt for the code");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux(&socket, &["send-keys", "-l", &code]);
    tmux(&socket, &["send-keys", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done.exists() {
        assert!(Instant::now() < deadline, "odt unlock did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let screen = tmux(&socket, &["capture-pane", "-p"]);
    let _ = run(
        Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .arg("kill-server"),
        None,
        MIN,
    );
    assert_eq!(
        std::fs::read_to_string(&done).unwrap().trim(),
        "EXIT=0",
        "{screen}"
    );
    assert!(screen.contains("is unlocked"), "{screen}");
    assert!(!screen.contains(&code), "the code was echoed:\n{screen}");
}

/// Python (the standard `ssl` module) holding `per_address` TLS connections from each of
/// `addresses` loopback addresses (127.0.0.2, ...) to `to`, each having sent a request
/// whose headers (60 KiB, under the appliance's 64 KiB buffer) never end. Prints `READY N`
/// once all are open, then holds them until its stdin closes.
const HOLD_TLS: &str = r#"
import socket, ssl, sys
host, port, addrs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
held = []
head = b"GET /api/v1/status HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 60000
for a in range(addrs):
    for _ in range(per):
        s = socket.create_connection((host, port), timeout=10, source_address=("127.0.0.%d" % (a + 2), 0))
        t = ctx.wrap_socket(s)
        t.sendall(head)
        held.append(t)
print("READY", len(held), flush=True)
sys.stdin.read()
"#;

#[test]
fn hostile_tls_connections_are_bounded_in_memory_and_leave_the_customer_served() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let job = Job::provision("1G", 1, &["--segment-size", "8M"]);
    let app = Appliance::start(&job, Options::default());
    app.unlock();
    // 5 addresses x 47: just under the per-address (48) and total (256) limits, every
    // connection through its handshake with 60 KiB of headers buffered by the appliance.
    let (addresses, per) = (5, 47);
    let mut py = Command::new("python3")
        .args(["-c", HOLD_TLS, "127.0.0.1"])
        .arg(app.control.port().to_string())
        .args([addresses.to_string(), per.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(py.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        format!("READY {}", addresses * per),
        "python could not open its connections\n{}",
        app.log_text()
    );
    // The customer, from its own address: status with the session, and the page.
    let o = run(&mut app.odt(&["status", "--json"]), None, MIN);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json(&o)["state"], "unlocked");
    let o = curl(
        &spki_pin(&job),
        &["-o", "/dev/null", "-w", "%{http_code}", &url(&app, "/")],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{}", text(&o));
    let rss = app.peak_rss_kib();
    drop(py.stdin.take());
    let _ = py.wait();
    assert!(
        rss < 256 * 1024,
        "the appliance peaked at {rss} KiB with {} hostile TLS connections",
        addresses * per
    );
    eprintln!(
        "peak RSS {rss} KiB with {} TLS connections holding 60 KiB of headers",
        addresses * per
    );
}

/// The value of `name="NAME" value="..."` in a page.
fn form_value(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} field in the page:\n{page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[test]
fn the_page_sets_a_strict_cookie_and_refuses_forms_from_elsewhere() {
    need_curl();
    let job = Job::provision("1G", 1, &["--segment-size", "8M"]);
    let app = Appliance::start(&job, Options::default());
    let pin = spki_pin(&job);
    let origin = format!("Origin: https://{}", app.control);
    let code = std::fs::read_to_string(&job.code_file).unwrap();
    let code = code.lines().find(|l| !l.starts_with('#')).unwrap().trim();

    // Sign in through the form (unlocks): a redirect and a session cookie a script cannot
    // read, sent only over HTTPS and never with another site's requests.
    let o = curl(
        &pin,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            &origin,
            "--data-urlencode",
            &format!("code={code}"),
            &url(&app, "/sign-in"),
        ],
    );
    let head = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie:\n{head}"));
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie_line.contains(attr), "{attr} missing: {cookie_line}");
    }
    let token = cookie_line
        .split_once("odt_session=")
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let cookie = format!("Cookie: odt_session={token}");
    let o = curl(&pin, &["-H", &cookie, &url(&app, "/")]);
    let page = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(page.contains("Dashboard"), "{page}");
    let csrf = form_value(&page, "csrf");
    let unlocked = || {
        let o = curl(&pin, &[&url(&app, "/api/v1/status")]);
        json(&o)["state"] == "unlocked"
    };

    // Seal forms that did not come from the page are refused, and nothing is sealed.
    let seal_form = |extra: &[&str], fields: &str| -> String {
        let mut args = vec![
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            cookie.as_str(),
        ];
        args.extend_from_slice(extra);
        args.extend(["-d", fields]);
        let u = url(&app, "/seal");
        args.push(u.as_str());
        String::from_utf8_lossy(&curl(&pin, &args).stdout).to_string()
    };
    let with_token = format!("csrf={csrf}&confirm=yes");
    let cases: [(&str, Vec<&str>, &str); 4] = [
        ("no form token", vec!["-H", origin.as_str()], "confirm=yes"),
        (
            "a wrong form token",
            vec!["-H", origin.as_str()],
            "csrf=00112233445566778899aabbccddeeff&confirm=yes",
        ),
        (
            "another site's origin",
            vec!["-H", "Origin: https://evil.example"],
            with_token.as_str(),
        ),
        (
            "a cross-site fetch",
            vec!["-H", "Sec-Fetch-Site: cross-site"],
            with_token.as_str(),
        ),
    ];
    for (what, extra, fields) in &cases {
        assert_eq!(seal_form(extra, fields), "403", "{what}");
        assert!(unlocked(), "sealed by a form with {what}");
    }
    // The API does not take the cookie for a change: it needs the bearer token.
    let o = curl(
        &pin,
        &[
            "-H",
            &cookie,
            "-d",
            "{}",
            "-w",
            "\n%{http_code}",
            &url(&app, "/api/v1/seal"),
        ],
    );
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(t.ends_with("\n401"), "{t}");
    assert!(unlocked(), "sealed through the API with a cookie");

    // The page's own form, with its token and from its origin, seals.
    assert_eq!(seal_form(&["-H", origin.as_str()], &with_token), "303");
    let o = curl(&pin, &[&url(&app, "/api/v1/status")]);
    assert_eq!(json(&o)["state"], "sealed", "{}", text(&o));
}
