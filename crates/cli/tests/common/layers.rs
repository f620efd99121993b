//! Building test layers byte by byte, and OCI layouts from them.
//!
//! A tiny tar writer of our own: the tests need pax xattrs, GNU long names
//! and deliberately malformed headers, which no tar crate writes on request.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

pub const MTIME: u64 = 1_700_000_000;

#[derive(Clone)]
pub struct Entry {
    pub path: Vec<u8>,
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub major: u32,
    pub minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl Entry {
    pub fn new(path: impl AsRef<[u8]>, typeflag: u8) -> Self {
        Self {
            path: path.as_ref().to_vec(),
            typeflag,
            mode: if typeflag == b'5' { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime: MTIME,
            link: Vec::new(),
            major: 0,
            minor: 0,
            xattrs: Vec::new(),
            data: Vec::new(),
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    assert!(s.len() < field.len(), "value {v} does not fit");
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

/// A 512-byte ustar header with a correct checksum.
pub fn header(path: &[u8], typeflag: u8, mode: u32, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..path.len().min(100)].copy_from_slice(&path[..path.len().min(100)]);
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], MTIME);
    h[156] = typeflag;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    set_checksum(&mut h);
    h
}

pub fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
}

fn pad(out: &mut Vec<u8>) {
    while out.len() % 512 != 0 {
        out.push(0);
    }
}

pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = [b" ", key, b"=", value, b"\n"].concat();
    let mut len = body.len() + 1;
    loop {
        let l = format!("{len}");
        if l.len() + body.len() == len {
            return [l.as_bytes(), &body].concat();
        }
        len = l.len() + body.len();
    }
}

#[derive(Default)]
pub struct Tar {
    pub out: Vec<u8>,
}

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entry(&mut self, e: &Entry) -> &mut Self {
        let mut pax = Vec::new();
        if e.path.len() > 100 {
            pax.extend(pax_record(b"path", &e.path));
        }
        if e.link.len() > 100 {
            pax.extend(pax_record(b"linkpath", &e.link));
        }
        for (k, v) in &e.xattrs {
            pax.extend(pax_record(&[b"SCHILY.xattr.", &k[..]].concat(), v));
        }
        if !pax.is_empty() {
            self.out.extend(header(
                b"././@PaxHeader",
                b'x',
                0o644,
                pax.len() as u64,
                b"",
            ));
            self.out.extend(&pax);
            pad(&mut self.out);
        }
        let mut h = header(&e.path, e.typeflag, e.mode, e.data.len() as u64, &e.link);
        octal(&mut h[108..116], e.uid);
        octal(&mut h[116..124], e.gid);
        octal(&mut h[136..148], e.mtime);
        if e.typeflag == b'3' || e.typeflag == b'4' {
            octal(&mut h[329..337], e.major as u64);
            octal(&mut h[337..345], e.minor as u64);
        }
        set_checksum(&mut h);
        self.out.extend(h);
        self.out.extend(&e.data);
        pad(&mut self.out);
        self
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.entry(&Entry::new(path, b'5'))
    }

    pub fn file(&mut self, path: impl AsRef<[u8]>, data: &[u8]) -> &mut Self {
        let mut e = Entry::new(path, b'0');
        e.data = data.to_vec();
        self.entry(&e)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut e = Entry::new(path, b'2');
        e.mode = 0o777;
        e.link = target.as_bytes().to_vec();
        self.entry(&e)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut e = Entry::new(path, b'1');
        e.link = target.as_bytes().to_vec();
        self.entry(&e)
    }

    pub fn whiteout(&mut self, dir: &str, name: &str) -> &mut Self {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.entry(&Entry::new(p, b'0'))
    }

    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.entry(&Entry::new(format!("{dir}/.wh..wh..opq"), b'0'))
    }

    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend([0u8; 1024]);
        out
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// One layer blob as it goes into a layout.
pub struct LayerBlob {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub diff_id: String,
}

impl LayerBlob {
    pub fn gzip(tar: &[u8]) -> Self {
        Self {
            bytes: gzip(tar),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            diff_id: sha256(tar),
        }
    }

    pub fn plain(tar: &[u8]) -> Self {
        Self {
            bytes: tar.to_vec(),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            diff_id: sha256(tar),
        }
    }
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    d
}

/// Writes an image into the OCI layout at `dir` under `tag` (creating the
/// layout if needed) and returns its manifest descriptor JSON.
pub fn write_image(
    dir: &Path,
    tag: &str,
    layers: &[LayerBlob],
    platform: (&str, &str),
) -> serde_json::Value {
    let runtime = serde_json::json!({"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]});
    write_image_with_config(dir, tag, layers, platform, runtime)
}

/// [`write_image`] with the config's runtime part (`config.config`: User,
/// Entrypoint, Cmd, Env...) given.
pub fn write_image_with_config(
    dir: &Path,
    tag: &str,
    layers: &[LayerBlob],
    platform: (&str, &str),
    runtime: serde_json::Value,
) -> serde_json::Value {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let config = serde_json::json!({
        "architecture": platform.1, "os": platform.0,
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = put_blob(dir, &config);
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let d = put_blob(dir, &l.bytes);
            serde_json::json!({"mediaType": l.media_type, "digest": d, "size": l.bytes.len()})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layer_descs,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(dir, &manifest);
    let desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
        "platform": {"os": platform.0, "architecture": platform.1},
    });
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
    let mut tagged = desc.clone();
    tagged["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let list = index["manifests"].as_array_mut().unwrap();
    list.retain(|m| m["annotations"]["org.opencontainers.image.ref.name"] != tag);
    list.push(tagged);
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    desc
}

/// Tags an OCI index of the given manifests in the layout.
pub fn write_index(dir: &Path, tag: &str, manifests: &[serde_json::Value]) {
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let d = put_blob(dir, &bytes);
    let index_path = dir.join("index.json");
    let mut top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    top["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    std::fs::write(&index_path, serde_json::to_vec_pretty(&top).unwrap()).unwrap();
}
