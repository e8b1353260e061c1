//! The appliance's web page in a real browser: headless Chromium (Debian's `chromium`,
//! driven through `chromedriver`'s W3C WebDriver API, spoken here with `curl`) trusts the
//! appliance only through the pinned public key (`--ignore-certificate-errors-spki-list`
//! with the pin from job.toml; insecure certificates are otherwise refused), is refused a
//! wrong code (the page says so and the custody list shows it), signs in, sees capacity
//! with the dead bytes of deleted data and the journal's use (as the status API gives them),
//! sees files copied over NFS appear with their bundle check, seals through "Prepare to
//! ship", reads the seal code (and its QR image), and downloads the bill of materials,
//! whose BLAKE3 values match the files copied. A screenshot of each step is saved under
//! `target/test-output/web_page/`; the checks read text, not pixels. The appliance stays
//! under 256 MiB of memory with the page open.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use odt_e2e::appliance::{Appliance, Job, Options};
use odt_e2e::bins;
use odt_e2e::nfsclient;
use odt_e2e::run::run;
use odt_e2e::vmtree;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(300);
/// W3C WebDriver's key for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn need(tool: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("{tool} is needed (Debian package {package}); run scripts/install-test-deps");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver and one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    shots: PathBuf,
    step: u32,
}

impl Browser {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "120", "-X", method])
            .arg(format!("{}{path}", self.base));
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "-d"])
                .arg(b.to_string());
        }
        let o = run(&mut c, None, LIMIT);
        assert!(
            o.status.success(),
            "WebDriver {method} {path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "WebDriver {method} {path} answered no JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        });
        assert!(
            v["value"].get("error").is_none(),
            "WebDriver {method} {path}: {v}"
        );
        v["value"].clone()
    }

    fn start(spki_pin: &str, profile: &Path, downloads: &Path, shots: PathBuf) -> Browser {
        let chromium = need("chromium", "chromium");
        need("chromedriver", "chromium-driver");
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            shots,
            step: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while run(
            Command::new("curl").args(["-sf", &format!("{}/status", b.base)]),
            None,
            LIMIT,
        )
        .status
        .code()
            != Some(0)
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": false,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1200,1800",
                    format!("--user-data-dir={}", profile.display()),
                    format!("--ignore-certificate-errors-spki-list={spki_pin}"),
                ],
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn open(&self, url: &str) {
        self.call("POST", &self.path("/url"), Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.path("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.path(&format!("/element/{e}/value")),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.path(&format!("/element/{e}/click")),
            Some(json!({})),
        );
    }

    fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            &self.path("/execute/sync"),
            Some(json!({"script": js, "args": []})),
        )
    }

    /// The page's visible text.
    fn text(&self) -> String {
        self.script("return document.body.innerText;")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a screenshot `NN-name.png` and returns the page text.
    fn shot(&mut self, name: &str) -> String {
        use base64::Engine;
        self.step += 1;
        let v = self.call("GET", &self.path("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("a PNG");
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.step)), png).unwrap();
        self.text()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = run(
                Command::new("curl").args([
                    "-s",
                    "-X",
                    "DELETE",
                    &format!("{}/session/{}", self.base, self.session),
                ]),
                None,
                Duration::from_secs(30),
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn job_value(job: &Job, key: &str) -> String {
    let t = std::fs::read_to_string(job.job_dir.join("job.toml")).unwrap();
    t.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key} = ")))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("job.toml has no {key}"))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_page_signs_in_shows_the_copy_seals_and_serves_the_bill_of_materials() {
    nfsclient::require_clients();
    let job = Job::provision("2G", 1, &["--segment-size", "8M"]);
    let app = Appliance::start(&job, Options::default());
    let shots = bins::target_dir().join("test-output").join("web_page");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let downloads = job.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let pin = job_value(&job, "tls_spki_pin");
    let mut b = Browser::start(
        &pin,
        &job.path("chromium-profile"),
        &downloads,
        shots.clone(),
    );
    let home = format!("https://{}/", app.control);

    // 1. Before sign-in: the state and the fingerprint, nothing else.
    b.open(&home);
    let t = b.shot("locked");
    assert!(t.contains("State: locked"), "{t}");
    assert!(t.contains(&job.fingerprint), "{t}");
    assert!(!t.contains("Dashboard"), "{t}");

    // 2. A wrong code: an error on the page, logged by the appliance.
    b.type_into("#code", "AAAAA-BBBBB-CCCCC-DDDDD");
    b.click("#sign-in-button");
    let t = b.shot("wrong-code");
    assert!(t.contains("does not open"), "{t}");
    assert!(t.contains("State: locked"), "{t}");
    assert!(app.log_text().contains("wrong unlock code from 127.0.0.1"));

    // 3. The right code unlocks and signs in: capacity shows.
    let code = std::fs::read_to_string(&job.code_file).unwrap();
    let code = code.lines().find(|l| !l.starts_with('#')).unwrap().trim();
    b.type_into("#code", code);
    b.click("#sign-in-button");
    let t = b.shot("dashboard");
    assert!(t.contains("State: unlocked"), "{t}");
    assert!(t.contains("Capacity"), "{t}");
    assert!(t.contains("free of"), "{t}");
    assert!(t.contains("mount -t nfs"), "{t}");
    assert!(t.contains("esxcli storage nfs add"), "{t}");
    assert!(
        t.contains("WRONG unlock code"),
        "the custody list shows the wrong code: {t}"
    );
    assert!(t.contains("No VM bundles"), "{t}");

    // 4. Files copied over NFS appear, with their bundle check.
    let local = job.path("export");
    let vm = vmtree::write_vm_export(&local, "vm-web", 24 << 20, 3);
    nfsclient::put_tree(&local, &app.url_root(), LIMIT);
    b.open(&home);
    let t = b.shot("files-copied");
    assert!(t.contains("3 files"), "{t}");
    assert!(t.contains("vm-web/vm-web.ovf"), "{t}");
    assert!(t.contains("complete"), "{t}");

    // 4b. A file copied then deleted leaves dead bytes; the page shows them and the
    // journal's use, as the status API reports them.
    let scratch = job.path("scratch.bin");
    std::fs::write(&scratch, odt_test_support::prelude::pattern(7, 3 << 20)).unwrap();
    nfsclient::nfs_cp_ok(
        &scratch.to_string_lossy(),
        &app.url_file("scratch.bin"),
        LIMIT,
    );
    nfsclient::nfstool_ok(&["rm", &app.url_root(), "/scratch.bin"], LIMIT);
    let shown = |b: &Browser, id: &str| {
        b.script(&format!(
            "const e = document.getElementById('{id}'); return e ? e.textContent : 'no #{id}';"
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    };
    let mut last = String::new();
    wait_for(
        "the page's dead bytes and journal use to match the status API",
        || {
            b.open(&home);
            let st = app.status();
            let st = &st["store"];
            let want = [
                ("dead", st["dead_bytes"].as_u64().unwrap()),
                ("journal-used", st["journal_used_bytes"].as_u64().unwrap()),
                ("journal-size", st["journal_bytes"].as_u64().unwrap()),
            ];
            last = format!("{st}");
            // (Dead bytes may already be cleaned away: they are compared, not required.)
            want[1].1 > 0
                && want
                    .iter()
                    .all(|(id, n)| shown(&b, id) == odt_store::units::bytes(*n))
        },
    );
    let t = b.shot("dead-and-journal");
    assert!(
        t.contains("held by deleted or overwritten data") && t.contains("Journal"),
        "{t}\n{last}"
    );
    assert!(shown(&b, "journal-pct").ends_with('%'), "{t}");

    // 5. Prepare to ship: confirm, seal; the seal code as text and as a QR image.
    b.click("#confirm");
    b.click("#seal-button");
    let t = b.shot("sealed");
    assert!(t.contains("State: sealed"), "{t}");
    let shown = b.script("return document.getElementById('seal-code').textContent;");
    let shown = shown.as_str().unwrap().to_string();
    assert_eq!(shown.len(), 14, "{shown}");
    let o = run(
        &mut app.odt(&["status", "--json", "--fingerprint", &app.fingerprint]),
        None,
        LIMIT,
    );
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["seal"]["seal_code"], shown.as_str(), "{st}");
    let qr = b.script(
        "const i = document.getElementById('seal-qr'); return i.complete && i.naturalWidth;",
    );
    assert!(
        qr.as_u64().unwrap_or(0) > 0,
        "the QR image did not load: {qr}"
    );

    // 6. The bill of materials, downloaded by the browser: BLAKE3 as b3sum computes it.
    b.click("#bom-csv");
    let mut csv = PathBuf::new();
    wait_for("the BOM download", || {
        let done = std::fs::read_dir(&downloads).unwrap().flatten().find(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".csv") && n.starts_with("bom-")
        });
        match done {
            Some(e) => {
                csv = e.path();
                true
            }
            None => false,
        }
    });
    b.shot("bom-downloaded");
    let bom = std::fs::read_to_string(&csv).unwrap();
    assert!(
        bom.starts_with("path,kind,size,mode,mtime_unix,blake3,mf_digest\n"),
        "{bom}"
    );
    for f in &vm.files {
        let data = std::fs::read(vm.dir.join(f)).unwrap();
        let line = format!("/vm-web/{f},file,{},", data.len());
        let row = bom
            .lines()
            .find(|l| l.starts_with(&line))
            .unwrap_or_else(|| panic!("{f} missing from the BOM:\n{bom}"));
        assert!(
            row.contains(&format!(",{},", blake3::hash(&data).to_hex())),
            "{row}"
        );
    }

    // `odt bom` fetches the same list over the API (signing in with the sheet: the seal
    // ended the page's session for other clients).
    let out = job.path("bom-odt.csv");
    let mut c = app.odt(&["bom", "--format", "csv", "--output"]);
    c.arg(&out).arg("--code-file").arg(&job.code_file);
    let o = run(&mut c, None, LIMIT);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        bom,
        "odt bom differs from the page's"
    );
    let o = run(
        app.odt(&["bom", "--json", "--code-file"])
            .arg(&job.code_file),
        None,
        LIMIT,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["seal_code"], shown.as_str(), "{v}");
    let listed = v["entries"].as_array().unwrap().len();
    assert_eq!(listed, bom.lines().count() - 1, "{v}");

    // 7. Memory with the page open.
    let rss = app.peak_rss_kib();
    assert!(
        rss < 256 * 1024,
        "the appliance peaked at {rss} KiB with the page open"
    );
    eprintln!(
        "screenshots in {}; appliance peak RSS {rss} KiB",
        shots.display()
    );
}
