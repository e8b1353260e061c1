//! `odt import`: the VM bundles of a sealed device set into vCenter.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use zeroize::Zeroizing;

use crate::import::vsphere::Endpoint;
use crate::import::vsphere::tls::{Pin, parse_thumbprint};

/// `odt import`
///
/// Checks the seal (a broken or missing seal is refused before vCenter is contacted), then
/// imports each OVF bundle on the devices as one VM: OvfManager.CreateImportSpec,
/// ResourcePool.ImportVApp, and every disk streamed from the devices to the upload lease,
/// decrypted and verified on the way (each record's tag and hash, each file's BLAKE3 root
/// against the sealed manifest). A lease completes only if every byte verified; otherwise
/// it is aborted and no VM stays registered. Nothing is staged on local disk.
///
/// Resumable: each imported VM carries the job id and the bundle's digest in its
/// annotation; running the same command again skips those and replaces VMs that an
/// interrupted run left half-imported. A VM of the same name that is not this bundle's
/// import is a conflict, reported and never overwritten.
///
/// The password comes from ODT_VCENTER_PASSWORD, --password-file, or a prompt (never from
/// the command line). The vCenter certificate must be trusted by the system or pinned with
/// --thumbprint; an untrusted one stops the import before any credential is sent and its
/// thumbprint and subject are printed.
///
/// Exit status: 0 every bundle imported or skipped; 3 finished, but bundles were refused
/// or quarantined (see the report); 1 stopped by an error.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The devices of the set (any order).
    #[arg(long = "device", required = true, num_args = 1..)]
    pub devices: Vec<PathBuf>,
    /// The job directory (job.toml and the ingest identity ingest.key).
    #[arg(long)]
    pub job: PathBuf,
    /// vCenter's SDK URL: https://USER@HOST[:PORT]/sdk (the user may come from --user).
    #[arg(long)]
    pub vcenter: String,
    /// The user, if the URL does not name one (e.g. administrator@vsphere.local).
    #[arg(long)]
    pub user: Option<String>,
    /// A file whose first line is the password (else ODT_VCENTER_PASSWORD, else a prompt).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// The datacenter (its name, or its path under folders: Folder/DC).
    #[arg(long)]
    pub datacenter: String,
    /// The datastore the VMs' files go to.
    #[arg(long)]
    pub datastore: String,
    /// The cluster whose root resource pool receives the VMs.
    #[arg(long, conflicts_with = "resource_pool")]
    pub cluster: Option<String>,
    /// A resource pool, by path under the datacenter's host folder
    /// (CLUSTER/Resources/POOL).
    #[arg(long)]
    pub resource_pool: Option<String>,
    /// The VM folder, by path under the datacenter's vm folder (default: that folder).
    #[arg(long)]
    pub folder: Option<String>,
    /// Connect the OVF network OVF_NAME to the port group PORTGROUP (repeatable).
    #[arg(long = "network", value_name = "OVF_NAME=PORTGROUP")]
    pub networks: Vec<String>,
    /// Power each VM on once imported.
    #[arg(long)]
    pub power_on: bool,
    /// SHA-256 thumbprint of vCenter's certificate, hex with or without colons: trust
    /// exactly that certificate (for a self-signed one).
    #[arg(long)]
    pub thumbprint: Option<String>,
    /// Import only this bundle (its .ovf/.ova path on the device, or its VM name);
    /// repeatable.
    #[arg(long = "bundle")]
    pub bundles: Vec<String>,
    /// Allow an http:// vCenter URL: no encryption, for a simulator only.
    #[arg(long)]
    pub allow_plain_http: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Splits `https://USER@HOST[:PORT]/sdk` into the user and the URL without it.
fn split_url(url: &str) -> anyhow::Result<(Option<String>, String)> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("--vcenter {url:?} is not a URL: give https://USER@HOST/sdk");
    };
    if scheme != "https" && scheme != "http" {
        bail!("--vcenter {url:?}: the scheme must be https");
    }
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/sdk"),
    };
    let (user, host) = match auth.rsplit_once('@') {
        Some((u, h)) => {
            if u.contains(':') {
                bail!(
                    "--vcenter must not carry a password: give it in ODT_VCENTER_PASSWORD, \
                     --password-file or at the prompt"
                );
            }
            (Some(u.to_string()), h)
        }
        None => (None, auth),
    };
    if host.is_empty() {
        bail!("--vcenter {url:?} names no host");
    }
    let path = if path == "/" { "/sdk" } else { path };
    Ok((
        user.filter(|u| !u.is_empty()),
        format!("{scheme}://{host}{path}"),
    ))
}

fn password(file: Option<&PathBuf>, user: &str, url: &str) -> anyhow::Result<Zeroizing<String>> {
    if let Some(f) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the password file {}", f.display()))?,
        );
        let first = text.lines().next().unwrap_or("");
        if first.is_empty() {
            bail!("the password file {} is empty", f.display());
        }
        return Ok(Zeroizing::new(first.to_string()));
    }
    if let Ok(p) = std::env::var("ODT_VCENTER_PASSWORD") {
        return Ok(Zeroizing::new(p));
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no password: set ODT_VCENTER_PASSWORD or give --password-file (there is no \
             terminal to ask on)"
        );
    }
    let p = rpassword::prompt_password(format!("Password for {user} at {url}: "))
        .context("cannot read the password from the terminal")?;
    Ok(Zeroizing::new(p))
}

/// Runs `odt import`. With --json every outcome is one JSON object on stdout: the report,
/// or (printed by `main`) `{"error": {"kind", "message"}}` for whatever stopped it.
pub fn run(a: ImportArgs) -> anyhow::Result<i32> {
    let json = a.json;
    let report = import(a)?;
    if json {
        crate::output::json(&report)?;
    } else {
        print!("{}", report.human());
    }
    Ok(if report.complete {
        0
    } else {
        crate::exit::PROBLEMS_FOUND
    })
}

fn import(a: ImportArgs) -> anyhow::Result<crate::import::report::Report> {
    let (url_user, url) = split_url(&a.vcenter)?;
    if url.starts_with("http://") && !a.allow_plain_http {
        bail!(
            "--vcenter {url} is plain http: credentials and data would travel unencrypted. Use \
             https, or pass --allow-plain-http for a simulator"
        );
    }
    let user = match (url_user, a.user.clone()) {
        (Some(u), None) | (None, Some(u)) => u,
        (Some(u), Some(v)) if u == v => u,
        (Some(u), Some(v)) => bail!("--vcenter names user {u} but --user says {v}: give one"),
        (None, None) => bail!("no user: give https://USER@HOST/sdk or --user"),
    };
    let pin = match &a.thumbprint {
        Some(t) => Pin::Sha256(parse_thumbprint(t).map_err(anyhow::Error::msg)?),
        None => Pin::System,
    };
    let mut networks = Vec::new();
    for n in &a.networks {
        match n.split_once('=') {
            Some((ovf, pg)) if !ovf.is_empty() && !pg.is_empty() => {
                networks.push((ovf.to_string(), pg.to_string()))
            }
            _ => bail!(
                "--network {n:?} is not OVF_NAME=PORTGROUP (the network's name in the OVF, \
                 then the port group in vCenter)"
            ),
        }
    }
    let password = password(a.password_file.as_ref(), &user, &url)?;
    let opts = crate::import::Options {
        devices: a.devices,
        job_dir: a.job,
        endpoint: Endpoint {
            url,
            pin,
            timeout: Duration::from_secs(120),
        },
        user,
        password,
        datacenter: a.datacenter,
        datastore: a.datastore,
        cluster: a.cluster,
        resource_pool: a.resource_pool,
        folder: a.folder,
        networks,
        power_on: a.power_on,
        bundles: a.bundles,
    };
    let report = crate::import::run(&opts, &|total| crate::progress::bytes_bar(total, "import"))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcenter_urls() {
        assert_eq!(
            split_url("https://admin@vc.example/sdk").unwrap(),
            (Some("admin".into()), "https://vc.example/sdk".into())
        );
        assert_eq!(
            split_url("https://administrator@vsphere.local@vc:8443/sdk").unwrap(),
            (
                Some("administrator@vsphere.local".into()),
                "https://vc:8443/sdk".into()
            )
        );
        assert_eq!(
            split_url("https://vc.example").unwrap(),
            (None, "https://vc.example/sdk".into())
        );
        assert!(
            split_url("https://u:pw@vc/sdk")
                .unwrap_err()
                .to_string()
                .contains("password")
        );
        assert!(split_url("ftp://vc/sdk").is_err());
        assert!(split_url("vc.example").is_err());
    }
}
