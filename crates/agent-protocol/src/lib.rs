//! The host ↔ agent protocol of the VM sandbox (docs/agent.md).
//!
//! One byte stream (a virtio-serial port here, vsock where the host has
//! it) carries frames:
//!
//! ```text
//! u32 length (big-endian) of what follows: 5 + payload
//! u8  kind     (Kind)
//! u32 process  (big-endian; 0 is the container's first process)
//! ... payload  (at most MAX_PAYLOAD bytes)
//! ```
//!
//! Control payloads are JSON objects; stream payloads are raw bytes.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Bumped whenever a frame's meaning changes. The agent announces its
/// own in [`Ready`]; the host refuses any other.
pub const VERSION: u32 = 5;

/// The virtio-serial port's name, as the guest sees it in
/// `/sys/class/virtio-ports/*/name`.
pub const PORT_NAME: &str = "org.skiff.agent.0";

/// The largest payload either side sends or accepts. Output is cut into
/// frames of at most this size; anything larger is a broken peer.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// The container's first process: its exit ends the VM.
pub const FIRST_PROCESS: u32 = 0;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    // Guest to host.
    /// The agent runs and the root is mounted: [`Ready`].
    Ready = 0x01,
    /// The process runs: [`Started`].
    Started = 0x02,
    /// Bytes the process wrote to its stdout (or its terminal).
    Stdout = 0x03,
    /// Bytes the process wrote to its stderr.
    Stderr = 0x04,
    /// The process has exited and its output is all sent: [`Exited`].
    Exited = 0x05,
    /// The process could not be started: [`Failed`].
    Failed = 0x06,
    /// A container's usage, the answer to [`Kind::QueryStats`]:
    /// [`ContainerStats`].
    Stats = 0x07,

    // Host to guest.
    /// Start a process: [`Start`].
    Start = 0x11,
    /// Bytes for the process's stdin; an empty payload closes it.
    Stdin = 0x12,
    /// Send a signal: the payload is the signal number, a big-endian i32.
    Signal = 0x13,
    /// Resize the process's terminal: rows then columns, big-endian u16s.
    Resize = 0x14,
    /// Ask for a container's usage, read from its cgroup in the guest:
    /// [`StatsQuery`]. No process is started; the answer comes on the
    /// same process number ([`Kind::Stats`], or [`Kind::Failed`]).
    QueryStats = 0x15,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        use Kind::*;
        Some(match b {
            0x01 => Ready,
            0x02 => Started,
            0x03 => Stdout,
            0x04 => Stderr,
            0x05 => Exited,
            0x06 => Failed,
            0x07 => Stats,
            0x11 => Start,
            0x12 => Stdin,
            0x13 => Signal,
            0x14 => Resize,
            0x15 => QueryStats,
            _ => return None,
        })
    }
}

/// One frame, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub process: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The payload as a JSON body.
    pub fn body<T: for<'de> Deserialize<'de>>(&self) -> io::Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {:?} frame's body: {e}", self.kind),
            )
        })
    }
}

/// Writes one frame in a single `write_all`, so that frames from several
/// threads never interleave when each writes under one lock.
pub fn write_frame(w: &mut impl Write, kind: Kind, process: u32, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a {kind:?} frame of {} bytes is over the protocol's {MAX_PAYLOAD}",
                payload.len()
            ),
        ));
    }
    let mut buf = Vec::with_capacity(9 + payload.len());
    buf.extend_from_slice(&(5 + payload.len() as u32).to_be_bytes());
    buf.push(kind as u8);
    buf.extend_from_slice(&process.to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()
}

/// Writes a frame with a JSON body.
pub fn write_body(
    w: &mut impl Write,
    kind: Kind,
    process: u32,
    body: &impl Serialize,
) -> io::Result<()> {
    let json = serde_json::to_vec(body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    write_frame(w, kind, process, &json)
}

/// Reads one frame. A stream that ends between frames is
/// `UnexpectedEof`; a length or kind out of the protocol is `InvalidData`
/// and nothing of its size is allocated.
pub fn read_frame(r: &mut impl Read) -> io::Result<Frame> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head)?;
    let len = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
    if !(5..=5 + MAX_PAYLOAD).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a frame of length {len} is outside the protocol (5..={})",
                5 + MAX_PAYLOAD
            ),
        ));
    }
    let kind = Kind::from_byte(head[4]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "frame kind {:#04x} is not in protocol version {VERSION}",
                head[4]
            ),
        )
    })?;
    let process = u32::from_be_bytes(head[5..9].try_into().expect("4 bytes"));
    let mut payload = vec![0; len - 5];
    r.read_exact(&mut payload)?;
    Ok(Frame {
        kind,
        process,
        payload,
    })
}

/// The agent's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The protocol version the agent speaks ([`VERSION`]).
    pub version: u32,
    /// The guest kernel's release (`uname -r`).
    pub kernel: String,
}

/// A process to start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The command and its arguments; `args[0]` is looked up in the
    /// root's `PATH` (from `env`) unless it holds a `/`.
    pub args: Vec<String>,
    /// `NAME=value`, the whole environment (the guest's never leaks in).
    pub env: Vec<String>,
    /// The working directory inside the root; made if missing, as Docker
    /// does for an image's `WorkingDir`.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// A pseudo-terminal instead of pipes, of this size.
    #[serde(default)]
    pub terminal: Option<TerminalSize>,
    /// The container's hostname (its own UTS namespace in the guest).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Files written into the root before the first process starts
    /// (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`), as Docker
    /// writes them; ignored for later processes.
    #[serde(default)]
    pub files: Vec<RootFile>,
    /// The capabilities the process keeps (bit N is capability N); all
    /// others leave its bounding, effective, permitted and inheritable
    /// sets. `None` keeps all.
    #[serde(default)]
    pub capabilities: Option<u64>,
    /// Set no_new_privs before the exec.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// A seccomp filter to load just before the exec.
    #[serde(default)]
    pub seccomp: Option<SeccompFilter>,
    /// Host directories shared into the root (`-v`), mounted before the
    /// first process starts; ignored for later processes.
    #[serde(default)]
    pub shares: Vec<SharedDir>,
    /// The container's cgroup in the guest: made with these limits for
    /// the first process; every process of the container runs in it.
    /// Ignored for later processes.
    #[serde(default)]
    pub cgroup: CgroupLimits,
    /// The container this process runs in, by its name: none is the
    /// first one (process 0's). An exec names the container it joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// A new container beside the first, whose first process this is: a
    /// pod's app container. Its root and mounts come from the pod share;
    /// it joins the first container's UTS and IPC namespaces and the
    /// guest's network, and gets its own mount, cgroup and (unless
    /// `share_pid`) pid namespaces. `shares` and `container` must be
    /// empty with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_container: Option<NewContainer>,
}

/// The 9p tag of the pod share: one host directory, shared by a pod's
/// sandbox VM, into which the host binds each later container's root
/// and mounts. The agent mounts it at [`POD_SHARE_DIR`], outside every
/// container's root.
pub const POD_SHARE_TAG: &str = "pod";
/// Where the agent mounts the pod share.
pub const POD_SHARE_DIR: &str = "/pod";

/// A pod's app container (see [`Start::new_container`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewContainer {
    /// Its name, which later execs give as [`Start::container`]: ASCII
    /// letters, digits, `-`, `_` and `.`, at most 128 bytes.
    pub name: String,
    /// Its root: a directory in the pod share, as a path relative to it.
    pub root: String,
    #[serde(default)]
    pub read_only_root: bool,
    /// Binds into its root, each from the pod share.
    #[serde(default)]
    pub mounts: Vec<PodMount>,
    /// Its `/dev/shm` is the first container's (the pod's IPC).
    #[serde(default)]
    pub pod_shm: bool,
    /// It joins the first container's pid namespace (a pod that shares
    /// its processes) instead of getting one of its own.
    #[serde(default)]
    pub share_pid: bool,
}

/// One bind into a pod container's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMount {
    /// A file or directory in the pod share, relative to it.
    pub source: String,
    /// Where the container sees it (absolute).
    pub destination: String,
    pub read_only: bool,
}

/// Limits of the container's cgroup (v2) in the guest. `None` leaves a
/// limit at the kernel's default (none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLimits {
    /// `memory.max`, bytes.
    #[serde(default)]
    pub memory_max: Option<u64>,
    /// `memory.swap.max`, bytes.
    #[serde(default)]
    pub swap_max: Option<u64>,
    /// `cpu.max`: a quota of `quota` µs in every `period` µs.
    #[serde(default)]
    pub cpu_max: Option<CpuMax>,
    /// `pids.max`.
    #[serde(default)]
    pub pids_max: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuMax {
    pub quota: u64,
    pub period: u64,
}

/// A host directory the hypervisor shares as a 9p device tagged `tag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedDir {
    pub tag: String,
    /// An absolute path inside the root.
    pub destination: String,
    pub read_only: bool,
    /// For a single file: its name in the shared directory (the file's
    /// own directory on the host), bound alone at `destination`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFile {
    /// An absolute path inside the root.
    pub path: String,
    pub contents: String,
}

/// A compiled seccomp filter, as the host compiled it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompFilter {
    /// Classic BPF instructions (`struct sock_filter`, 8 bytes each), in
    /// the guest's byte order, hex-encoded.
    pub program: String,
    /// `seccomp(SECCOMP_SET_MODE_FILTER, flags, ...)`'s flags.
    pub flags: u64,
}

/// The process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// Its pid in the guest.
    pub pid: i32,
}

/// Which container's usage to report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsQuery {
    /// By its name (a pod's app container); none is the first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// A container's usage, from its cgroup in the guest. A figure the guest
/// kernel does not give is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// `memory.current`.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// `memory.max`, unless it is `max`.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// `cpu.stat`'s `usage_usec`, in nanoseconds.
    #[serde(default)]
    pub cpu_nanos: Option<u64>,
    /// `pids.current`.
    #[serde(default)]
    pub pids: Option<u64>,
}

/// How the process ended: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exited {
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// The guest kernel's OOM killer has struck since the guest booted
    /// (the guest's memory is the container's limit).
    #[serde(default)]
    pub oom_killed: bool,
}

/// Why a process did not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub reason: FailReason,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// The command is not in the root (Docker's 127).
    NotFound,
    /// It is there but cannot be run (Docker's 126).
    NotExecutable,
    /// The request was wrong: a bad path, a process id in use.
    Invalid,
    /// A step in the guest failed.
    Setup,
}

/// Hex, for the seccomp program: JSON has no bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Stdout, 7, b"hello").unwrap();
        write_body(
            &mut buf,
            Kind::Exited,
            0,
            &Exited {
                code: Some(3),
                signal: None,
                oom_killed: false,
            },
        )
        .unwrap();
        assert_eq!(&buf[..9], &[0, 0, 0, 10, 0x03, 0, 0, 0, 7]);
        let mut r = &buf[..];
        let f = read_frame(&mut r).unwrap();
        assert_eq!(
            (f.kind, f.process, &f.payload[..]),
            (Kind::Stdout, 7, &b"hello"[..])
        );
        let e: Exited = read_frame(&mut r).unwrap().body().unwrap();
        assert_eq!(e.code, Some(3));
        assert_eq!(
            read_frame(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn a_hostile_peer_is_refused_before_anything_is_allocated() {
        // A length of 4 GiB.
        let huge = [0xff, 0xff, 0xff, 0xff, 0x03, 0, 0, 0, 0];
        let e = read_frame(&mut &huge[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // A kind not in this version.
        let unknown = [0, 0, 0, 5, 0x7f, 0, 0, 0, 0];
        assert!(read_frame(&mut &unknown[..])
            .unwrap_err()
            .to_string()
            .contains("0x7f"));
        // Too short to hold its own header.
        let short = [0, 0, 0, 2, 0x03, 0, 0, 0, 0];
        assert_eq!(
            read_frame(&mut &short[..]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // A sender never builds an oversized frame.
        let big = vec![0; MAX_PAYLOAD + 1];
        assert!(write_frame(&mut Vec::new(), Kind::Stdin, 0, &big).is_err());
    }

    #[test]
    fn a_stats_query_and_its_answer_round_trip() {
        let mut buf = Vec::new();
        let query = StatsQuery {
            container: Some("app".into()),
        };
        write_body(&mut buf, Kind::QueryStats, 2, &query).unwrap();
        let stats = ContainerStats {
            memory_bytes: Some(50 << 20),
            memory_limit_bytes: None,
            cpu_nanos: Some(7000),
            pids: Some(1),
        };
        write_body(&mut buf, Kind::Stats, 2, &stats).unwrap();
        let mut r = &buf[..];
        let f = read_frame(&mut r).unwrap();
        assert_eq!((f.kind, f.process), (Kind::QueryStats, 2));
        assert_eq!(f.body::<StatsQuery>().unwrap(), query);
        let f = read_frame(&mut r).unwrap();
        assert_eq!(f.kind, Kind::Stats);
        assert_eq!(f.body::<ContainerStats>().unwrap(), stats);
        // The first container: no name at all on the wire.
        let first = serde_json::to_string(&StatsQuery::default()).unwrap();
        assert_eq!(first, "{}");
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(
            from_hex(&to_hex(&[0, 0xab, 0xff])).unwrap(),
            vec![0, 0xab, 0xff]
        );
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }
}
