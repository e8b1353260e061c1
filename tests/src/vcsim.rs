//! govmomi's vCenter simulator for the import tests: the Go program in `tests/vcsim`, built
//! once (cached under the target directory by the hash of its source) from Debian's
//! golang-go and golang-github-vmware-govmomi-dev, run on loopback with an upload tap.
//! Also the test bundles it imports: OVF descriptors with a VirtualHardwareSection, disks
//! that are a streamOptimized header over random bytes or real streamOptimized VMDKs made by
//! `qemu-img`, stored plain, gzip-compressed (GNU gzip) or in chunks.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::bins;
use crate::run::run_ok;

/// The built simulator program.
pub fn binary() -> PathBuf {
    let src = bins::repo().join("tests/vcsim/main.go");
    let text = std::fs::read(&src).expect("tests/vcsim/main.go");
    let dir = bins::target_dir().join("vcsim");
    let bin = dir.join(format!(
        "vcsim-{}",
        &blake3::hash(&text).to_hex().as_str()[..16]
    ));
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        Path::new("/usr/share/gocode/src/github.com/vmware/govmomi/simulator").is_dir(),
        "govmomi's simulator is not installed: run scripts/install-test-deps \
         (golang-go, golang-github-vmware-govmomi-dev)"
    );
    let tmp = dir.join(format!("build-{}", std::process::id()));
    run_ok(
        Command::new("go")
            .current_dir(bins::repo().join("tests/vcsim"))
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOCACHE", dir.join("gocache"))
            .env("GOFLAGS", "-mod=mod")
            .args(["build", "-o"])
            .arg(&tmp)
            .arg("."),
        Duration::from_secs(600),
    );
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}

/// A running simulator.
pub struct Vcsim {
    child: Child,
    /// `https://127.0.0.1:PORT/sdk`
    pub url: String,
    /// SHA-256 of its certificate, lower-case hex.
    pub thumbprint: String,
    /// Where the tap keeps a copy of each upload (`LEASE/FILE`).
    pub tap: PathBuf,
}

impl Vcsim {
    /// Starts the simulator (user `odt`, password `secret`) keeping uploads under `tap`;
    /// `args` are its other flags (`-folders a,b`, `-pools p`, `-foreign NAME@FOLDER`,
    /// `-datastores N`, `-slow-upload-kib K`: see tests/vcsim/main.go).
    pub fn start(tap: &Path, args: &[&str]) -> Vcsim {
        std::fs::create_dir_all(tap).unwrap();
        // The simulator keeps its datastores in temporary directories that it removes only
        // when it exits by itself; killed at the end of a test it would leave them in /tmp.
        let scratch = tap.with_extension("tmp");
        std::fs::create_dir_all(&scratch).unwrap();
        let mut child = Command::new(binary())
            .arg("-tap")
            .arg(tap)
            .args(args)
            .env("TMPDIR", &scratch)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(tap.with_extension("log")).unwrap())
            .spawn()
            .expect("start the simulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the simulator printed {line:?}: {e}"));
        Vcsim {
            child,
            url: v["url"].as_str().unwrap().to_string(),
            thumbprint: v["thumbprint"].as_str().unwrap().to_string(),
            tap: tap.to_path_buf(),
        }
    }

    /// What the simulator logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tap.with_extension("log")).unwrap_or_default()
    }

    /// `https://odt@127.0.0.1:PORT/sdk`
    pub fn url_with_user(&self) -> String {
        self.url.replacen("https://", "https://odt@", 1)
    }

    /// The simulator's VMs and the Login requests it received, through curl.
    pub fn inventory(&self) -> serde_json::Value {
        let base = self.url.trim_end_matches("/sdk");
        let out = run_ok(
            Command::new("curl")
                .args(["-sS", "--fail", "-k"])
                .arg(format!("{base}/odt-test/inventory")),
            Duration::from_secs(30),
        );
        serde_json::from_str(&out).unwrap()
    }

    /// Ends `-slow-upload-kib` for the uploads that start from now on.
    pub fn full_speed(&self) {
        let base = self.url.trim_end_matches("/sdk");
        run_ok(
            Command::new("curl")
                .args(["-sS", "--fail", "-k", "-X", "POST"])
                .arg(format!("{base}/odt-test/full-speed")),
            Duration::from_secs(30),
        );
    }

    /// The VMs named `name`, as the inventory shows them (folder, annotation, power_state,
    /// pool, networks, datastores, moref), in the order of their managed object ids.
    pub fn vms(&self, name: &str) -> Vec<serde_json::Value> {
        let mut vms: Vec<_> = self.inventory()["vms"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v["name"] == name)
            .collect();
        vms.sort_by_key(|v| v["moref"].as_str().unwrap_or_default().to_string());
        vms
    }

    /// The completed uploads the tap kept.
    pub fn uploads(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for lease in std::fs::read_dir(&self.tap).unwrap().flatten() {
            for f in std::fs::read_dir(lease.path()).unwrap().flatten() {
                if f.path().extension().is_none_or(|e| e != "part") {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A disk file as vCenter imports them: a streamOptimized sparse-extent header (magic
/// `KDMV`, version 3, compressed grains with markers) followed by `len - 512` bytes of
/// seeded random data. The simulator stores uploads without parsing them; the import
/// itself only checks the descriptor's format.
pub fn stream_vmdk(len: usize, seed: u64) -> Vec<u8> {
    let mut d = vec![0u8; len.max(512)];
    StdRng::seed_from_u64(seed).fill_bytes(&mut d[512..]);
    d[..512].fill(0);
    d[0..4].copy_from_slice(b"KDMV");
    d[4..8].copy_from_slice(&3u32.to_le_bytes());
    d[8..12].copy_from_slice(&0x30001u32.to_le_bytes());
    d[12..20].copy_from_slice(&((len as u64).div_ceil(512)).to_le_bytes());
    d[20..28].copy_from_slice(&128u64.to_le_bytes());
    d[77..79].copy_from_slice(&1u16.to_le_bytes());
    d
}

/// An OVF descriptor of a one-disk VM that CreateImportSpec accepts: a VirtualSystem with
/// CPU, memory, a SCSI controller, the disk and a network card on `VM Network`. `size` is
/// the disk file's size as packed (compressed, all chunks).
pub fn descriptor(name: &str, disk: &str, size: usize, packing: Packing) -> String {
    let chunk = match packing {
        Packing::Chunks(c) => format!(" ovf:chunkSize=\"{c}\""),
        Packing::Gzip => " ovf:compression=\"gzip\"".to_string(),
        Packing::Plain => String::new(),
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:href="{disk}" ovf:id="file1" ovf:size="{size}"{chunk}/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="101" ovf:osType="otherLinux64Guest"><Info>The kind of installed guest operating system</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:Description>Number of Virtual CPUs</rasd:Description><rasd:ElementName>1 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:Description>Memory Size</rasd:Description><rasd:ElementName>256MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:Description>SCSI Controller</rasd:Description><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// How a bundle's disk file is packed, as the OVF standard allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// The disk file as it is.
    Plain,
    /// `ovf:compression="gzip"`: the file is the disk gzip-compressed (GNU gzip).
    Gzip,
    /// `ovf:chunkSize`: the disk split into `disk.vmdk.000000000`, ... of this many bytes.
    Chunks(usize),
}

/// Writes an OVF folder `dir/name/` (descriptor, disk, .mf); returns the disk's bytes.
pub fn write_ovf_folder(dir: &Path, name: &str, disk_len: usize, seed: u64) -> Vec<u8> {
    let disk = stream_vmdk(disk_len, seed);
    write_ovf_bundle(dir, name, &disk, Packing::Plain);
    disk
}

/// Writes an OVF folder `dir/name/` holding `disk` packed as told: the descriptor, the disk
/// file(s), and a .mf with the SHA-256 of every file as written.
pub fn write_ovf_bundle(dir: &Path, name: &str, disk: &[u8], packing: Packing) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let disk_name = format!("{name}-disk1.vmdk");
    let files: Vec<(String, Vec<u8>)> = match packing {
        Packing::Plain => vec![(disk_name.clone(), disk.to_vec())],
        Packing::Gzip => {
            let plain = d.join(format!("{disk_name}.plain"));
            std::fs::write(&plain, disk).unwrap();
            let out = Command::new("gzip")
                .args(["-n", "-c", "-6"])
                .arg(&plain)
                .output()
                .expect("run gzip");
            assert!(out.status.success(), "gzip failed");
            std::fs::remove_file(&plain).unwrap();
            vec![(disk_name.clone(), out.stdout)]
        }
        Packing::Chunks(c) => disk
            .chunks(c)
            .enumerate()
            .map(|(i, part)| (format!("{disk_name}.{i:09}"), part.to_vec()))
            .collect(),
    };
    let packed: usize = files.iter().map(|(_, b)| b.len()).sum();
    let ovf = descriptor(name, &disk_name, packed, packing);
    std::fs::write(d.join(format!("{name}.ovf")), &ovf).unwrap();
    let mut mf = format!("SHA256({name}.ovf)= {}\n", sha256_hex(ovf.as_bytes()));
    for (f, bytes) in &files {
        std::fs::write(d.join(f), bytes).unwrap();
        mf.push_str(&format!("SHA256({f})= {}\n", sha256_hex(bytes)));
    }
    std::fs::write(d.join(format!("{name}.mf")), mf).unwrap();
}

/// A real streamOptimized VMDK made by `qemu-img convert` from a raw disk image of `mib`
/// MiB (written to `raw`): runs of zeros, of repeated text and of seeded random bytes, as
/// on a used disk. Returns the VMDK's bytes.
pub fn real_vmdk(raw: &Path, mib: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut img = vec![0u8; mib << 20];
    for block in img.chunks_mut(64 << 10) {
        match rng.next_u32() % 4 {
            0 => {}
            1 => {
                let line = format!("odt test disk seed {seed} line {}\n", rng.next_u32());
                for (i, b) in block.iter_mut().enumerate() {
                    *b = line.as_bytes()[i % line.len()];
                }
            }
            _ => rng.fill_bytes(block),
        }
    }
    std::fs::write(raw, &img).unwrap();
    let vmdk = raw.with_extension("vmdk");
    run_ok(
        Command::new("qemu-img")
            .args([
                "convert",
                "-f",
                "raw",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
            ])
            .arg(raw)
            .arg(&vmdk),
        Duration::from_secs(120),
    );
    let bytes = std::fs::read(&vmdk).unwrap();
    std::fs::remove_file(&vmdk).unwrap();
    bytes
}

/// `qemu-img check` of a VMDK file and `qemu-img compare` with the raw image it was made
/// from: panics unless the VMDK is sound and holds exactly that disk.
pub fn assert_vmdk_holds(vmdk: &Path, raw: &Path) {
    run_ok(
        Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(vmdk),
        Duration::from_secs(120),
    );
    let out = run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(raw)
            .arg(vmdk),
        Duration::from_secs(120),
    );
    assert!(out.contains("Images are identical"), "{out}");
}

/// Writes `dir/name.ova` (descriptor, disk, .mf in a tar archive); returns the disk's bytes.
pub fn write_ova(dir: &Path, name: &str, disk_len: usize, seed: u64) -> Vec<u8> {
    let disk = stream_vmdk(disk_len, seed);
    let disk_name = format!("{name}-disk1.vmdk");
    let ovf = descriptor(name, &disk_name, disk.len(), Packing::Plain);
    let mf = format!(
        "SHA256({name}.ovf)= {}\nSHA256({disk_name})= {}\n",
        sha256_hex(ovf.as_bytes()),
        sha256_hex(&disk)
    );
    let mut b = tar::Builder::new(std::fs::File::create(dir.join(format!("{name}.ova"))).unwrap());
    for (n, data) in [
        (format!("{name}.ovf"), ovf.as_bytes()),
        (disk_name, &disk[..]),
        (format!("{name}.mf"), mf.as_bytes()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, n, data).unwrap();
    }
    b.into_inner().unwrap().sync_all().unwrap();
    disk
}
