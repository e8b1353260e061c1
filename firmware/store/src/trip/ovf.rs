//! OVF packages as vSphere exports them, parsed from customer bytes: the descriptor
//! (References, DiskSection, the VirtualSystem's name), `.mf` digest lines, chunked files
//! (`ovf:chunkSize`: `disk.vmdk.000000000`, `disk.vmdk.000000001`, ...) and OVA archives
//! (tar, with PAX headers, GNU long names and members of 8 GiB and more).

use std::io::{Read, Seek};

/// The disk format vCenter imports as it is (what ovftool and vCloud Connector export).
pub const STREAM_OPTIMIZED: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// A file reference in a descriptor's References section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `ovf:href`: the file's name in the package.
    pub href: String,
    /// `ovf:size`: the file's size (of all its chunks together when chunked).
    pub size: Option<u64>,
    /// `ovf:id`, what DiskSection's `ovf:fileRef` names.
    pub id: Option<String>,
    /// `ovf:chunkSize`: the file is split into chunks of this many bytes.
    pub chunk_size: Option<u64>,
    /// `ovf:compression` (`gzip`), if any.
    pub compression: Option<String>,
}

impl Reference {
    /// A plain reference (no id, not chunked, not compressed).
    pub fn plain(href: &str, size: Option<u64>) -> Reference {
        Reference {
            href: href.to_string(),
            size,
            id: None,
            chunk_size: None,
            compression: None,
        }
    }

    /// Whether the file is gzip-compressed; an error names a compression nobody can read.
    pub fn gzip(&self) -> Result<bool, String> {
        match self.compression.as_deref() {
            None | Some("") | Some("identity") => Ok(false),
            Some("gzip") => Ok(true),
            Some(other) => Err(format!(
                "file {:?} uses ovf:compression={other:?}; only gzip is supported",
                self.href
            )),
        }
    }
}

/// The name of chunk `n` of a chunked file.
pub fn chunk_name(href: &str, n: u64) -> String {
    format!("{href}.{n:09}")
}

/// A disk of the DiskSection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDesc {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// The `ovf:id` of the Reference holding the disk's content (none for an empty disk).
    pub file_ref: Option<String>,
    /// `ovf:format`, a URI such as [`STREAM_OPTIMIZED`].
    pub format: Option<String>,
}

/// What the import needs from a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// The References section, in document order.
    pub references: Vec<Reference>,
    /// The DiskSection's disks.
    pub disks: Vec<DiskDesc>,
    /// The VirtualSystem's `Name`, else its `ovf:id`; None if there is no single VirtualSystem
    /// (a VirtualSystemCollection, a vApp, is not one VM).
    pub vm_name: Option<String>,
}

impl Envelope {
    /// The reference with this `ovf:id`.
    pub fn reference(&self, id: &str) -> Option<&Reference> {
        self.references.iter().find(|r| r.id.as_deref() == Some(id))
    }

    /// The disk whose content is the reference `href`.
    pub fn disk_of(&self, href: &str) -> Option<&DiskDesc> {
        self.disks.iter().find(|d| {
            d.file_ref
                .as_deref()
                .and_then(|id| self.reference(id))
                .is_some_and(|r| r.href == href)
        })
    }
}

fn attr(n: roxmltree::Node, name: &str) -> Option<String> {
    n.attributes()
        .find(|a| a.name() == name)
        .map(|a| a.value().to_string())
}

fn children<'a, 'input>(
    n: roxmltree::Node<'a, 'input>,
    name: &'static str,
) -> Vec<roxmltree::Node<'a, 'input>> {
    n.children()
        .filter(|c| c.is_element() && c.tag_name().name() == name)
        .collect()
}

fn number(href: &str, what: &str, s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("file {href:?} has a {what} that is not a number: {s:?}"))
}

/// Parses an OVF descriptor.
pub fn parse_envelope(text: &str) -> Result<Envelope, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not valid XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Envelope" {
        return Err(format!(
            "the root element is <{}>, not an OVF <Envelope>",
            root.tag_name().name()
        ));
    }
    let mut env = Envelope::default();
    for r in children(root, "References") {
        for f in children(r, "File") {
            let href = attr(f, "href").ok_or("a <File> in References has no href")?;
            let size = attr(f, "size")
                .map(|s| number(&href, "size", &s))
                .transpose()?;
            let chunk_size = attr(f, "chunkSize")
                .map(|s| number(&href, "chunkSize", &s))
                .transpose()?;
            if chunk_size == Some(0) {
                return Err(format!("file {href:?} has a chunkSize of 0"));
            }
            env.references.push(Reference {
                size,
                id: attr(f, "id"),
                chunk_size,
                compression: attr(f, "compression"),
                href,
            });
        }
    }
    for s in children(root, "DiskSection") {
        for d in children(s, "Disk") {
            env.disks.push(DiskDesc {
                disk_id: attr(d, "diskId").unwrap_or_default(),
                file_ref: attr(d, "fileRef"),
                format: attr(d, "format"),
            });
        }
    }
    if let [vs] = children(root, "VirtualSystem").as_slice() {
        let name = children(*vs, "Name")
            .first()
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        env.vm_name = name.or_else(|| attr(*vs, "id")).filter(|n| !n.is_empty());
    }
    Ok(env)
}

/// Parses an OVF descriptor's References section.
pub fn parse_descriptor(text: &str) -> Result<Vec<Reference>, String> {
    parse_envelope(text).map(|e| e.references)
}

/// One line of a `.mf`: algorithm, file name, expected hex digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfEntry {
    /// Digest algorithm as written (`SHA256`, `SHA1`, ...), upper case.
    pub algorithm: String,
    /// The file the digest is of.
    pub file: String,
    /// Expected digest, lower-case hex.
    pub digest: String,
}

/// Parses a `.mf` manifest (`SHA256(disk.vmdk)= abc…` per line).
pub fn parse_mf(text: &str) -> Result<Vec<MfEntry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || format!("line {} is not `ALGO(file)= digest`: {line:?}", n + 1);
        let open = line.find('(').ok_or_else(bad)?;
        let close = line.rfind(")=").ok_or_else(bad)?;
        if close < open {
            return Err(bad());
        }
        out.push(MfEntry {
            algorithm: line[..open].trim().to_ascii_uppercase(),
            file: line[open + 1..close].to_string(),
            digest: line[close + 2..].trim().to_ascii_lowercase(),
        });
    }
    Ok(out)
}

/// A regular file inside an OVA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name (PAX `path` and GNU long names applied).
    pub name: String,
    /// Where its bytes start in the archive.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// The regular files of a tar archive, in archive order, without reading their data
/// (`archive` is only seeked past it). Directories and links are left out. An error says
/// where the archive is not a valid tar (truncated, damaged header, bad PAX record) or
/// passes on the reader's own error.
pub fn tar_members<R: Read + Seek>(mut archive: R) -> std::io::Result<Vec<Member>> {
    // The tar reader takes an early end of the file for the end of the archive.
    let len = archive.seek(std::io::SeekFrom::End(0))?;
    archive.seek(std::io::SeekFrom::Start(0))?;
    let mut a = tar::Archive::new(archive);
    let mut out = Vec::new();
    for entry in a.entries_with_seek()? {
        let entry = entry?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let end = entry.raw_file_position().saturating_add(entry.size());
        if end > len {
            return Err(std::io::Error::other(format!(
                "member {name:?} ends at byte {end} but the archive has {len} bytes (truncated?)"
            )));
        }
        out.push(Member {
            name,
            offset: entry.raw_file_position(),
            size: entry.size(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, SeekFrom};

    #[test]
    fn descriptor_and_manifest_parsing() {
        let ovf = r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References>
    <File ovf:href="vm-disk1.vmdk" ovf:id="file1" ovf:size="68608"/>
    <File ovf:href="vm.nvram" ovf:id="file2"/>
    <File ovf:href="big.vmdk" ovf:id="file3" ovf:size="3000" ovf:chunkSize="1000" ovf:compression="gzip"/>
  </References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm-id"><Name>web 01</Name></VirtualSystem>
</Envelope>"#;
        let e = parse_envelope(ovf).unwrap();
        let r = &e.references;
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].href, "vm-disk1.vmdk");
        assert_eq!(r[0].size, Some(68608));
        assert_eq!(r[0].id.as_deref(), Some("file1"));
        assert_eq!(r[1].size, None);
        assert_eq!(r[2].chunk_size, Some(1000));
        assert_eq!(r[2].gzip(), Ok(true));
        assert_eq!(r[0].gzip(), Ok(false));
        assert_eq!(e.vm_name.as_deref(), Some("web 01"));
        assert_eq!(e.disk_of("vm-disk1.vmdk").unwrap().disk_id, "vmdisk1");
        assert_eq!(
            e.disk_of("vm-disk1.vmdk").unwrap().format.as_deref(),
            Some(STREAM_OPTIMIZED)
        );
        assert!(e.disk_of("vm.nvram").is_none());
        let no_name = ovf.replace("<Name>web 01</Name>", "");
        assert_eq!(
            parse_envelope(&no_name).unwrap().vm_name.as_deref(),
            Some("vm-id")
        );
        let mut odd = r[2].clone();
        odd.compression = Some("bzip2".into());
        assert!(odd.gzip().unwrap_err().contains("only gzip"));
        assert!(
            parse_descriptor(&ovf.replace("\"1000\"", "\"0\""))
                .unwrap_err()
                .contains("chunkSize of 0")
        );
        assert!(
            parse_descriptor("<Envelope><References>")
                .unwrap_err()
                .contains("not valid XML")
        );
        assert!(
            parse_descriptor("<html/>")
                .unwrap_err()
                .contains("not an OVF")
        );
        let mf = parse_mf("SHA256(vm.ovf)= ABCDEF\nSHA1(a b.vmdk)= 0123\n").unwrap();
        assert_eq!(mf[0].algorithm, "SHA256");
        assert_eq!(mf[0].digest, "abcdef");
        assert_eq!(mf[1].file, "a b.vmdk");
        assert!(parse_mf("garbage").is_err());
        assert_eq!(chunk_name("d.vmdk", 12), "d.vmdk.000000012");
    }

    fn member(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    }

    #[test]
    fn tar_with_long_names_and_pax() {
        let long = format!("{}/disk-with-a-very-long-name.vmdk", "d".repeat(120));
        let mut b = tar::Builder::new(Vec::new());
        member(&mut b, "vm.ovf", b"<Envelope/>");
        member(&mut b, &long, &[7u8; 1500]);
        b.append_pax_extensions([("path", "pax/renamed.vmdk".as_bytes())])
            .unwrap();
        member(&mut b, "short.vmdk", b"abc");
        let bytes = b.into_inner().unwrap();
        let m = tar_members(Cursor::new(&bytes)).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "vm.ovf");
        assert_eq!(m[1].name, long);
        assert_eq!(m[1].size, 1500);
        assert_eq!(
            &bytes[m[1].offset as usize..m[1].offset as usize + 1500],
            &[7u8; 1500][..]
        );
        assert_eq!(m[2].name, "pax/renamed.vmdk");
        assert_eq!(&bytes[m[2].offset as usize..][..3], b"abc");
        // Cut inside a member's data, and inside a long-name record.
        let cut = tar_members(Cursor::new(&bytes[..m[1].offset as usize + 100])).unwrap_err();
        assert!(cut.to_string().contains("truncated"), "{cut}");
        assert!(tar_members(Cursor::new(&bytes[..1700])).is_err());
    }

    /// An archive whose one member is 9 GiB of zeros, never held in memory: the headers
    /// are real bytes, the data a seekable stretch of zeros.
    struct Virtual {
        head: Vec<u8>,
        data: u64,
        pos: u64,
    }

    impl Read for Virtual {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let h = self.head.len() as u64;
            let total = h + self.data.next_multiple_of(512) + 1024;
            if self.pos >= total {
                return Ok(0);
            }
            let n = if self.pos < h {
                let n = buf.len().min((h - self.pos) as usize);
                buf[..n].copy_from_slice(&self.head[self.pos as usize..][..n]);
                n
            } else {
                let n = buf.len().min((total - self.pos) as usize);
                buf[..n].fill(0);
                n
            };
            self.pos += n as u64;
            Ok(n)
        }
    }

    impl Seek for Virtual {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.pos = match to {
                SeekFrom::Start(p) => p,
                SeekFrom::Current(d) => self.pos.checked_add_signed(d).unwrap(),
                SeekFrom::End(d) => {
                    (self.head.len() as u64 + self.data.next_multiple_of(512) + 1024)
                        .checked_add_signed(d)
                        .unwrap()
                }
            };
            Ok(self.pos)
        }
    }

    #[test]
    fn members_of_8_gib_and_more() {
        let size = 9u64 << 30;
        // PAX size record (the ustar field holds at most 8 GiB - 1) ...
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", size.to_string().as_bytes())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("huge.vmdk").unwrap();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut head = b.into_inner().unwrap();
        // Without the end-of-archive blocks the builder adds.
        head.truncate(head.len() - 1024);
        head.extend_from_slice(h.as_bytes());
        let m = tar_members(Virtual {
            head,
            data: size,
            pos: 0,
        })
        .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].size, size);
        assert_eq!(m[0].name, "huge.vmdk");
        // ... and GNU's base-256 size field.
        let mut h = tar::Header::new_gnu();
        h.set_path("huge.vmdk").unwrap();
        h.set_size(size);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let m = tar_members(Virtual {
            head: h.as_bytes().to_vec(),
            data: size,
            pos: 0,
        })
        .unwrap();
        assert_eq!(m[0].size, size);
        assert_eq!(m[0].offset, 512);
    }
}
