//! Task Stats: the container's cgroup figures as the typed metrics
//! containerd decodes (`ctr task metrics`, the CRI's ContainerStats):
//! cgroups v1's or v2's, whichever hierarchy the container is on.

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};

/// What the engine measured, packed for containerd.
pub fn to_any(stats: &skiff_engine::oci_runtime::Stats, unified: bool) -> Result<Any, String> {
    let (type_url, value) = if unified {
        let mut m = v2::Metrics::new();
        let mut memory = v2::MemoryStat::new();
        memory.usage = stats.memory_bytes.unwrap_or(0);
        memory.usage_limit = stats.memory_limit_bytes.unwrap_or(u64::MAX);
        m.memory = MessageField::some(memory);
        let mut cpu = v2::CPUStat::new();
        cpu.usage_usec = stats.cpu_nanos.unwrap_or(0) / 1000;
        m.cpu = MessageField::some(cpu);
        let mut pids = v2::PidsStat::new();
        pids.current = stats.pids.unwrap_or(0);
        m.pids = MessageField::some(pids);
        ("io.containerd.cgroups.v2.Metrics", m.write_to_bytes())
    } else {
        let mut m = v1::Metrics::new();
        let mut usage = v1::MemoryEntry::new();
        usage.usage = stats.memory_bytes.unwrap_or(0);
        usage.limit = stats.memory_limit_bytes.unwrap_or(u64::MAX);
        let mut memory = v1::MemoryStat::new();
        memory.usage = MessageField::some(usage);
        m.memory = MessageField::some(memory);
        let mut cpu_usage = v1::CPUUsage::new();
        cpu_usage.total = stats.cpu_nanos.unwrap_or(0);
        let mut cpu = v1::CPUStat::new();
        cpu.usage = MessageField::some(cpu_usage);
        m.cpu = MessageField::some(cpu);
        let mut pids = v1::PidsStat::new();
        pids.current = stats.pids.unwrap_or(0);
        m.pids = MessageField::some(pids);
        ("io.containerd.cgroups.v1.Metrics", m.write_to_bytes())
    };
    let mut any = Any::new();
    any.type_url = type_url.into();
    any.value = value.map_err(|e| format!("encoding the metrics: {e}"))?;
    Ok(any)
}
