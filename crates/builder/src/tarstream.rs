//! A streaming tar reader for untrusted layers.
//!
//! Hand-written rather than the `tar` crate because that crate reads GNU
//! long-name and PAX records whole into memory with no bound, so a small
//! gzip layer can demand gigabytes; and because skiff wants a GNU sparse
//! file's map of holes, which that crate turns into zeros. This reader
//! bounds every record, rejects malformed numbers, and never panics.
//!
//! Supported: ustar, GNU (long names, old-style sparse files) and POSIX pax
//! (path, linkpath, size, uid, gid, mtime, `SCHILY.xattr.*`,
//! `LIBARCHIVE.xattr.*`). PAX sparse formats are refused with a clear error.

use std::io::{self, Read};

pub const BLOCK: usize = 512;
/// Longest GNU long name or link target.
pub const MAX_LONG_NAME: u64 = 64 * 1024;
/// Largest pax extended header.
pub const MAX_PAX: u64 = 4 << 20;
/// Most extents in one sparse file.
pub const MAX_SPARSE_EXTENTS: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    File,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

/// One member of the archive, with extension records applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Ordinal of this member among the non-extension members, from 0.
    pub index: u64,
    pub kind: TarKind,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Logical size of a regular file (holes included).
    pub size: u64,
    /// For sparse files: the data extents `(offset, length)`, in order. The
    /// stored data is these extents back to back; everything else is a hole.
    pub sparse: Option<Vec<(u64, u64)>>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parses a numeric header field: octal text, or GNU base-256 when the high
/// bit of the first byte is set. Negative values are refused.
pub fn parse_number(field: &[u8], what: &str) -> io::Result<u64> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return Err(bad(format!("negative {what} in tar header")));
            }
            let mut v: u64 = (first & 0x7f) as u64;
            for &b in &field[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(b as u64))
                    .ok_or_else(|| bad(format!("{what} in tar header overflows")))?;
            }
            return Ok(v);
        }
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(bad(format!("{what} in tar header is not an octal number")));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add((b - b'0') as u64))
            .ok_or_else(|| bad(format!("{what} in tar header overflows")))?;
    }
    Ok(v)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn checksum_ok(h: &[u8; BLOCK]) -> io::Result<bool> {
    let stored = parse_number(&h[148..156], "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += b as i8 as i64;
    }
    Ok(stored == unsigned || stored as i64 == signed)
}

/// Pax records that apply to the next member.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: bool,
}

fn parse_decimal(v: &[u8], what: &str) -> io::Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| bad(format!("pax {what} is not a number")))
}

/// `secs[.frac]`, possibly negative.
fn parse_pax_time(v: &[u8]) -> io::Result<(i64, u32)> {
    let s = std::str::from_utf8(v).map_err(|_| bad("pax mtime is not text"))?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole
        .parse()
        .map_err(|_| bad("pax mtime is not a number"))?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("pax mtime has a malformed fraction"));
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().unwrap_or(0);
    Ok(if neg {
        if nsec == 0 {
            (-secs, 0)
        } else {
            (-secs - 1, 1_000_000_000 - nsec)
        }
    } else {
        (secs, nsec)
    })
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn parse_pax(data: &[u8], pax: &mut Pax) -> io::Result<()> {
    use base64::Engine;
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("malformed pax record"))?;
        let len = parse_decimal(&rest[..sp], "record length")? as usize;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("malformed pax record length"));
        }
        let record = &rest[sp + 1..len - 1];
        rest = &rest[len..];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("pax record without '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.link = Some(value.to_vec()),
            b"size" => pax.size = Some(parse_decimal(value, "size")?),
            b"uid" => pax.uid = Some(parse_decimal(value, "uid")?),
            b"gid" => pax.gid = Some(parse_decimal(value, "gid")?),
            b"mtime" => pax.mtime = Some(parse_pax_time(value)?),
            _ if key.starts_with(b"SCHILY.xattr.") => {
                pax.xattrs
                    .push((key[b"SCHILY.xattr.".len()..].to_vec(), value.to_vec()));
            }
            _ if key.starts_with(b"LIBARCHIVE.xattr.") => {
                let name = percent_decode(&key[b"LIBARCHIVE.xattr.".len()..])
                    .ok_or_else(|| bad("malformed LIBARCHIVE.xattr name"))?;
                let end = value.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
                let value = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(&value[..end])
                    .map_err(|_| bad("malformed LIBARCHIVE.xattr value"))?;
                pax.xattrs.push((name, value));
            }
            _ if key.starts_with(b"GNU.sparse.") => pax.sparse = true,
            _ => {}
        }
    }
    Ok(())
}

pub struct TarReader<R> {
    inner: R,
    /// Stored bytes of the current member not yet read.
    remaining: u64,
    /// Padding after the current member's data.
    padding: u64,
    next_index: u64,
    finished: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            remaining: 0,
            padding: 0,
            next_index: 0,
            finished: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tar stream is truncated",
                ));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Reads one header block. `Ok(None)` at a clean end of stream.
    fn read_block(&mut self, block: &mut [u8; BLOCK]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < BLOCK {
            let n = self.inner.read(&mut block[filled..])?;
            if n == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tar header is truncated",
                ));
            }
            filled += n;
        }
        Ok(true)
    }

    fn read_record(&mut self, size: u64, limit: u64, what: &str) -> io::Result<Vec<u8>> {
        if size > limit {
            return Err(bad(format!(
                "{what} of {size} bytes exceeds the limit of {limit}"
            )));
        }
        let mut data = vec![0u8; size as usize];
        self.inner.read_exact(&mut data).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(io::ErrorKind::UnexpectedEof, format!("{what} is truncated"))
            } else {
                e
            }
        })?;
        self.skip(padding_for(size))?;
        Ok(data)
    }

    /// Advances to the next member, skipping any unread data of the current one.
    pub fn next_entry(&mut self) -> io::Result<Option<TarEntry>> {
        if self.finished {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut pax = Pax::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut block = [0u8; BLOCK];
        loop {
            if !self.read_block(&mut block)? {
                // No end-of-archive marker: accept, as most runtimes do.
                self.finished = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                self.finished = true;
                return Ok(None);
            }
            if !checksum_ok(&block)? {
                return Err(bad(
                    "tar header checksum mismatch (not a tar stream, or corrupt)",
                ));
            }
            let typeflag = block[156];
            let header_size = parse_number(&block[124..136], "size")?;
            match typeflag {
                b'L' => {
                    long_name = Some(
                        cstr(&self.read_record(header_size, MAX_LONG_NAME, "GNU long name")?)
                            .to_vec(),
                    );
                    continue;
                }
                b'K' => {
                    long_link = Some(
                        cstr(&self.read_record(header_size, MAX_LONG_NAME, "GNU long link")?)
                            .to_vec(),
                    );
                    continue;
                }
                b'x' | b'X' => {
                    let data = self.read_record(header_size, MAX_PAX, "pax header")?;
                    parse_pax(&data, &mut pax)?;
                    continue;
                }
                b'g' => {
                    // Global headers carry defaults no layer builder relies on.
                    self.read_record(header_size, MAX_PAX, "pax global header")?;
                    continue;
                }
                b'V' => {
                    self.skip(header_size + padding_for(header_size))?;
                    continue;
                }
                _ => {}
            }
            return self
                .finish_entry(&block, typeflag, header_size, pax, long_name, long_link)
                .map(Some);
        }
    }

    fn finish_entry(
        &mut self,
        h: &[u8; BLOCK],
        typeflag: u8,
        header_size: u64,
        pax: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> io::Result<TarEntry> {
        let is_ustar = &h[257..263] == b"ustar\0";
        let is_gnu = &h[257..265] == b"ustar  \0";
        let kind = match typeflag {
            // Pre-POSIX archives mark directories only by a trailing slash.
            0 if h[..100].contains(&b'/') && cstr(&h[..100]).ends_with(b"/") => TarKind::Directory,
            b'0' | 0 | b'7' | b'S' => TarKind::File,
            b'1' => TarKind::HardLink,
            b'2' => TarKind::Symlink,
            b'3' => TarKind::CharDevice,
            b'4' => TarKind::BlockDevice,
            b'5' | b'D' => TarKind::Directory,
            b'6' => TarKind::Fifo,
            other => {
                return Err(bad(format!(
                    "tar member of unsupported type {:?}",
                    (other as char).escape_default().to_string()
                )))
            }
        };
        if pax.sparse {
            return Err(bad(
                "pax sparse files are not supported; rebuild the layer without --sparse or with GNU tar --format=gnu",
            ));
        }
        let path = if let Some(p) = pax.path {
            p
        } else if let Some(p) = long_name {
            p
        } else {
            let name = cstr(&h[0..100]);
            let prefix = if is_ustar {
                cstr(&h[345..500])
            } else {
                &[][..]
            };
            if prefix.is_empty() {
                name.to_vec()
            } else {
                [prefix, b"/", name].concat()
            }
        };
        let link = pax
            .link
            .or(long_link)
            .unwrap_or_else(|| cstr(&h[157..257]).to_vec());
        let stored = pax.size.unwrap_or(header_size);
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(t) => t,
            None => (parse_number(&h[136..148], "mtime")? as i64, 0),
        };
        let dev = |r: std::ops::Range<usize>, what| -> io::Result<u32> {
            let v = parse_number(&h[r], what)?;
            u32::try_from(v).map_err(|_| bad(format!("{what} out of range")))
        };
        let (dev_major, dev_minor) = if matches!(kind, TarKind::CharDevice | TarKind::BlockDevice) {
            (
                dev(329..337, "device major")?,
                dev(337..345, "device minor")?,
            )
        } else {
            (0, 0)
        };
        let mut entry = TarEntry {
            index: self.next_index,
            kind,
            path,
            link,
            mode: (parse_number(&h[100..108], "mode")? & 0o7777) as u32,
            uid: pax
                .uid
                .map_or_else(|| parse_number(&h[108..116], "uid"), Ok)?,
            gid: pax
                .gid
                .map_or_else(|| parse_number(&h[116..124], "gid"), Ok)?,
            mtime,
            mtime_nsec,
            dev_major,
            dev_minor,
            size: 0,
            sparse: None,
            xattrs: pax.xattrs,
        };
        self.next_index += 1;
        if typeflag == b'S' {
            if !is_gnu {
                return Err(bad("sparse tar member without a GNU header"));
            }
            let (extents, real_size) = self.read_sparse_map(h, stored)?;
            entry.size = real_size;
            entry.sparse = Some(extents);
        } else if kind == TarKind::File {
            entry.size = stored;
        }
        // Only regular files carry data; anything else stored is skipped.
        self.remaining = stored;
        self.padding = padding_for(stored);
        if kind != TarKind::File {
            self.skip(self.remaining + self.padding)?;
            self.remaining = 0;
            self.padding = 0;
        }
        Ok(entry)
    }

    fn read_sparse_map(
        &mut self,
        h: &[u8; BLOCK],
        stored: u64,
    ) -> io::Result<(Vec<(u64, u64)>, u64)> {
        let mut extents: Vec<(u64, u64)> = Vec::new();
        let push = |field: &[u8], extents: &mut Vec<(u64, u64)>| -> io::Result<()> {
            let off = parse_number(&field[..12], "sparse offset")?;
            let len = parse_number(&field[12..24], "sparse length")?;
            if off == 0 && len == 0 && field.iter().all(|&b| b == 0) {
                return Ok(());
            }
            if extents.len() >= MAX_SPARSE_EXTENTS {
                return Err(bad("sparse file has too many extents"));
            }
            extents.push((off, len));
            Ok(())
        };
        for i in 0..4 {
            push(&h[386 + i * 24..386 + (i + 1) * 24], &mut extents)?;
        }
        let mut extended = h[482] != 0;
        let mut block = [0u8; BLOCK];
        while extended {
            if !self.read_block(&mut block)? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "sparse map is truncated",
                ));
            }
            for i in 0..21 {
                push(&block[i * 24..(i + 1) * 24], &mut extents)?;
            }
            extended = block[504] != 0;
        }
        let real_size = parse_number(&h[483..495], "sparse real size")?;
        let mut end = 0u64;
        let mut total = 0u64;
        for &(off, len) in &extents {
            if off < end {
                return Err(bad("sparse extents overlap or are out of order"));
            }
            end = off
                .checked_add(len)
                .ok_or_else(|| bad("sparse extent overflows"))?;
            total = total
                .checked_add(len)
                .ok_or_else(|| bad("sparse extents overflow"))?;
        }
        if end > real_size || total != stored {
            return Err(bad("sparse map disagrees with the member's sizes"));
        }
        extents.retain(|&(_, len)| len > 0);
        Ok((extents, real_size))
    }

    /// Reads the current member's stored data.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar member data is truncated",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// A `Read` over the current member's stored data.
    pub fn data(&mut self) -> MemberData<'_, R> {
        MemberData(self)
    }
}

pub struct MemberData<'a, R>(&'a mut TarReader<R>);

impl<R: Read> Read for MemberData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_data(buf)
    }
}

fn padding_for(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn octal(field: &mut [u8], v: u64) {
        let s = format!("{:0w$o}", v, w = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
    }

    fn header(name: &[u8], typeflag: u8, size: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 1234);
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        fix(&mut h);
        h
    }

    fn fix(h: &mut [u8; BLOCK]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        octal(&mut h[148..155], sum);
    }

    fn member(out: &mut Vec<u8>, name: &[u8], typeflag: u8, data: &[u8]) {
        out.extend(header(name, typeflag, data.len() as u64));
        out.extend(data);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
    }

    fn pax(out: &mut Vec<u8>, records: &[(&str, &[u8])]) {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = [b" ", k.as_bytes(), b"=", v, b"\n"].concat();
            let mut n = rest.len() + 1;
            while format!("{n}").len() + rest.len() != n {
                n = format!("{n}").len() + rest.len();
            }
            body.extend(format!("{n}").as_bytes());
            body.extend(rest);
        }
        member(out, b"pax", b'x', &body);
    }

    fn all(bytes: &[u8]) -> io::Result<Vec<(TarEntry, Vec<u8>)>> {
        let mut r = TarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            let mut data = Vec::new();
            r.data().read_to_end(&mut data)?;
            out.push((e, data));
        }
        Ok(out)
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0000644\0", "m").unwrap(), 0o644);
        assert_eq!(parse_number(b"  12 \0", "m").unwrap(), 0o12);
        assert_eq!(parse_number(b"\0\0\0", "m").unwrap(), 0);
        assert_eq!(parse_number(&[0x80, 0, 0, 1, 0], "m").unwrap(), 256);
        assert!(parse_number(&[0xff; 12], "m").is_err());
        assert!(parse_number(b"0009", "m").is_err());
        assert!(parse_number(
            &[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "m"
        )
        .is_err());
    }

    #[test]
    fn pax_records_apply_to_the_next_member() {
        let mut t = Vec::new();
        let long = "d/".repeat(80) + "file";
        pax(
            &mut t,
            &[
                ("path", long.as_bytes()),
                ("mtime", b"1700000000.25"),
                ("SCHILY.xattr.user.a", b"v\0x"),
                ("uid", b"4294967295"),
            ],
        );
        member(&mut t, b"short", b'0', b"data");
        member(&mut t, b"next", b'0', b"");
        t.extend([0u8; 1024]);
        let e = all(&t).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0.path, long.as_bytes());
        assert_eq!(
            (e[0].0.mtime, e[0].0.mtime_nsec),
            (1_700_000_000, 250_000_000)
        );
        assert_eq!(e[0].0.xattrs, vec![(b"user.a".to_vec(), b"v\0x".to_vec())]);
        assert_eq!(e[0].0.uid, 4294967295);
        assert_eq!(e[0].1, b"data");
        assert_eq!(e[1].0.path, b"next");
        assert_eq!(e[1].0.index, 1);
    }

    #[test]
    fn negative_pax_time() {
        assert_eq!(parse_pax_time(b"-1.5").unwrap(), (-2, 500_000_000));
        assert_eq!(parse_pax_time(b"-3").unwrap(), (-3, 0));
        assert!(parse_pax_time(b"1.x").is_err());
    }

    #[test]
    fn gnu_long_names_and_sparse_maps() {
        let mut t = Vec::new();
        let long = vec![b'n'; 300];
        let mut name = long.clone();
        name.push(0);
        member(&mut t, b"././@LongLink", b'L', &name);
        member(&mut t, b"ignored", b'0', b"x");
        // A sparse member: 10 bytes at 0, 5 bytes at 1 MiB, real size 2 MiB.
        let mut h = header(b"sparse", b'S', 15);
        h[257..265].copy_from_slice(b"ustar  \0");
        octal(&mut h[386..398], 0);
        octal(&mut h[398..410], 10);
        octal(&mut h[410..422], 1 << 20);
        octal(&mut h[422..434], 5);
        octal(&mut h[483..495], 2 << 20);
        fix(&mut h);
        t.extend(h);
        t.extend(b"0123456789abcde");
        t.resize(t.len().next_multiple_of(BLOCK), 0);
        t.extend([0u8; 1024]);
        let e = all(&t).unwrap();
        assert_eq!(e[0].0.path, long);
        assert_eq!(e[1].0.size, 2 << 20);
        assert_eq!(e[1].0.sparse, Some(vec![(0, 10), (1 << 20, 5)]));
        assert_eq!(e[1].1, b"0123456789abcde");
    }

    #[test]
    fn hostile_records_are_bounded() {
        let mut t = Vec::new();
        t.extend(header(b"././@LongLink", b'L', MAX_LONG_NAME + 1));
        assert!(all(&t)
            .unwrap_err()
            .to_string()
            .contains("exceeds the limit"));
        let mut t = Vec::new();
        t.extend(header(b"pax", b'x', MAX_PAX + 1));
        assert!(all(&t)
            .unwrap_err()
            .to_string()
            .contains("exceeds the limit"));
        let mut t = Vec::new();
        member(&mut t, b"f", b'0', b"abc");
        t.truncate(600);
        assert_eq!(all(&t).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut h = header(b"f", b'0', 0);
        h[0] = b'g';
        assert!(all(&h).unwrap_err().to_string().contains("checksum"));
        let mut t = Vec::new();
        pax(&mut t, &[("GNU.sparse.major", b"1")]);
        member(&mut t, b"f", b'0', b"");
        assert!(all(&t).unwrap_err().to_string().contains("pax sparse"));
        assert!(all(&header(b"f", b'M', 0)).is_err());
    }

    #[test]
    fn end_without_marker_and_unread_data() {
        let mut t = Vec::new();
        member(&mut t, b"a", b'0', &[1u8; 1000]);
        member(&mut t, b"b", b'0', b"bee");
        let mut r = TarReader::new(&t[..]);
        assert_eq!(r.next_entry().unwrap().unwrap().path, b"a");
        // Skip a's data without reading it.
        let b = r.next_entry().unwrap().unwrap();
        assert_eq!(b.path, b"b");
        let mut d = Vec::new();
        r.data().read_to_end(&mut d).unwrap();
        assert_eq!(d, b"bee");
        assert!(r.next_entry().unwrap().is_none());
    }
}
