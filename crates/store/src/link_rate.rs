//! The registry link's rate, as one mount's bulk range requests see it.
//!
//! Only requests of at least [`BULK_REQUEST`] bytes count: a small request
//! is all latency, and shaped links pass their first few hundred KiB as a
//! burst. The rate is the bulk bytes received over the time at least one
//! bulk request was in flight, so parallel requests add up rather than
//! each seeing a share of the link, and latency inside a busy period
//! counts against the rate: it errs low, never above the link.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests smaller than this say more about latency than about the link.
pub const BULK_REQUEST: u64 = 512 << 10;
/// No rate is claimed before this many bulk bytes have arrived.
const MIN_SAMPLE: u64 = 1 << 20;

#[derive(Default)]
pub struct LinkRate {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    in_flight: u32,
    busy_since: Option<Instant>,
    busy: Duration,
    bytes: u64,
}

impl LinkRate {
    /// A bulk request starts.
    pub fn begin(&self, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.in_flight == 0 {
            s.busy_since = Some(now);
        }
        s.in_flight += 1;
    }

    /// A bulk request that [`Self::begin`] counted ended with `bytes`
    /// received (0 if it failed).
    pub fn end(&self, now: Instant, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.bytes += bytes;
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            if let Some(t) = s.busy_since.take() {
                s.busy += now.saturating_duration_since(t);
            }
        }
    }

    /// Bytes per second, once enough has been measured.
    pub fn bytes_per_sec(&self, now: Instant) -> Option<u64> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.bytes < MIN_SAMPLE {
            return None;
        }
        let open = s
            .busy_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let busy = (s.busy + open).as_secs_f64();
        (busy > 0.0).then(|| (s.bytes as f64 / busy) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn no_rate_until_a_megabyte_has_arrived() {
        let r = LinkRate::default();
        let t = Instant::now();
        r.begin(t);
        r.end(t + 10 * MS, 512 << 10);
        assert_eq!(r.bytes_per_sec(t + 10 * MS), None);
    }

    #[test]
    fn parallel_requests_add_up() {
        let r = LinkRate::default();
        let t = Instant::now();
        // Four 1 MiB requests side by side over 40 ms: 100 MiB/s.
        for _ in 0..4 {
            r.begin(t);
        }
        for _ in 0..4 {
            r.end(t + 40 * MS, 1 << 20);
        }
        let rate = r.bytes_per_sec(t + 40 * MS).unwrap();
        assert_eq!(rate, (4u64 << 20) * 25);
    }

    #[test]
    fn idle_time_between_requests_does_not_count_but_open_time_does() {
        let r = LinkRate::default();
        let t = Instant::now();
        r.begin(t);
        r.end(t + 10 * MS, 1 << 20);
        // A second of idle link, then a request still in flight for 10 ms.
        r.begin(t + 1010 * MS);
        let rate = r.bytes_per_sec(t + 1020 * MS).unwrap();
        assert_eq!(rate, (1u64 << 20) * 50);
    }
}
