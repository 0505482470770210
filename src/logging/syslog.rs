//! RFC 5424 syslog lines for [`NatEvent`]s, one message per UDP datagram (RFC 5426):
//! `<PRI>1 TIMESTAMP HOSTNAME xnat PROCID MSGID - natEvent=N key=value...`.
//!
//! The structured-data part is empty (`-`): the message text carries the minimal fields
//! of the event (see [`EventKind`]'s `Display`), plus the destination of a session only
//! when configured.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::event::{EventKind, NatEvent};

/// Severity "Informational".
const SEVERITY_INFO: u8 = 6;

/// Formats syslog lines.
#[derive(Clone, Debug)]
pub struct SyslogFormat {
    /// Syslog facility (0..=23; 16 is local0).
    pub facility: u8,
    /// HOSTNAME field (`-` when empty).
    pub hostname: String,
    /// Add the destination address and port to session lines.
    pub destinations: bool,
    /// PROCID field.
    pub pid: u32,
}

impl SyslogFormat {
    /// Writes the line of `ev` into `out` (cleared first), without a trailing newline.
    pub fn format(&self, ev: &NatEvent, out: &mut String) {
        out.clear();
        let pri = u16::from(self.facility.min(23)) * 8 + u16::from(SEVERITY_INFO);
        let host = if self.hostname.is_empty() {
            "-"
        } else {
            &self.hostname
        };
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            "<{pri}>1 {} {host} xnat {} {} - {}",
            Rfc3339Ms(ev.time_ms),
            self.pid,
            ev.kind.short_name(),
            ev.kind
        );
        if self.destinations {
            if let EventKind::SessionCreate(s) | EventKind::SessionDelete(s) = ev.kind {
                let _ = write!(out, " dst={}:{}", Ipv4Addr::from(s.dst), s.dst_port);
            }
        }
    }
}

/// A UTC timestamp in RFC 3339 form with milliseconds (`2026-12-04T15:17:59.123Z`).
pub struct Rfc3339Ms(pub u64);

impl std::fmt::Display for Rfc3339Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm, for
/// non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::event::{PortBlock, Session};

    #[test]
    fn timestamps() {
        assert_eq!(Rfc3339Ms(0).to_string(), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day) 12:34:56.789
        assert_eq!(
            Rfc3339Ms(951_827_696_789).to_string(),
            "2000-02-29T12:34:56.789Z"
        );
        assert_eq!(
            Rfc3339Ms(1_796_397_479_005).to_string(),
            "2026-12-04T15:17:59.005Z"
        );
    }

    #[test]
    fn lines() {
        let f = SyslogFormat {
            facility: 16,
            hostname: "gw1".into(),
            destinations: false,
            pid: 77,
        };
        let b = PortBlock::contiguous(0xC612_0002, 0xC613_0001, 1024, 1535).unwrap();
        let mut s = String::new();
        f.format(&NatEvent::at(0, EventKind::PortBlockAlloc(b)), &mut s);
        assert_eq!(
            s,
            "<134>1 1970-01-01T00:00:00.000Z gw1 xnat 77 PORT_BLOCK_ALLOC - natEvent=16 \
             src=198.18.0.2 nat=198.19.0.1 ports=1024-1535 step=1 n=512"
        );
        let sess = Session {
            proto: 17,
            inside: 0xC612_0002,
            inside_port: 5000,
            nat: 0xC613_0001,
            nat_port: 1100,
            dst: 0xC613_0002,
            dst_port: 53,
        };
        f.format(&NatEvent::at(0, EventKind::SessionDelete(sess)), &mut s);
        assert!(s.ends_with(
            "SESSION_DELETE - natEvent=5 proto=17 src=198.18.0.2:5000 nat=198.19.0.1:1100"
        ));
        let f2 = SyslogFormat {
            destinations: true,
            hostname: String::new(),
            ..f
        };
        f2.format(&NatEvent::at(0, EventKind::SessionCreate(sess)), &mut s);
        assert!(s.contains(" - xnat 77 SESSION_CREATE - natEvent=4 "), "{s}");
        assert!(s.ends_with(" dst=198.19.0.2:53"), "{s}");
    }
}
