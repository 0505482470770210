//! TCP MSS clamping (`--clamp-mss auto|N`): the maximum segment size announced in SYN and
//! SYN-ACK segments is lowered to what the gateway's links carry, as nftables
//! `tcp option maxseg size set rt mtu` (or iptables `TCPMSS --clamp-mss-to-pmtu`) does on
//! PPPoE and tunnel uplinks, where ICMP-based path MTU discovery is often blocked further on.
//!
//! Only an MSS option larger than the limit is changed (never raised, never added), and the
//! TCP checksum is updated incrementally.

use crate::packet::checksum::Delta;
use crate::packet::l4::{TCP_CHECKSUM, TCP_DATA_OFFSET, TCP_FLAGS, TCP_MIN_HEADER_LEN, TCP_SYN};
use crate::packet::{L4Kind, Parsed};

/// How the MSS is clamped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MssClamp {
    /// Not at all (the default).
    #[default]
    Off,
    /// To the smaller of the two interfaces' MTUs minus 40 (IPv4 and TCP headers).
    Auto,
    /// To this value.
    Fixed(u16),
}

impl std::str::FromStr for MssClamp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(MssClamp::Off),
            "auto" => Ok(MssClamp::Auto),
            n => match n.parse::<u16>() {
                Ok(v) if (88..=65495).contains(&v) => Ok(MssClamp::Fixed(v)),
                _ => Err(format!(
                    "'{s}' is not off, auto or a segment size from 88 to 65495"
                )),
            },
        }
    }
}

impl std::fmt::Display for MssClamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MssClamp::Off => f.write_str("off"),
            MssClamp::Auto => f.write_str("auto"),
            MssClamp::Fixed(v) => write!(f, "{v}"),
        }
    }
}

/// TCP option kind: maximum segment size.
const OPT_MSS: u8 = 2;

/// If `p` is a TCP segment with SYN set carrying an MSS option above `max`, lowers it to
/// `max` and updates the TCP checksum; returns whether the frame changed. Never panics.
pub fn clamp(frame: &mut [u8], p: &Parsed, max: u16) -> bool {
    if p.kind() != L4Kind::Tcp || p.tcp_flags() & TCP_SYN == 0 {
        return false;
    }
    let l4 = p.l4();
    let Some(seg) = frame.get_mut(l4..p.end()) else {
        return false;
    };
    let Some(&off) = seg.get(TCP_DATA_OFFSET) else {
        return false;
    };
    let doff = usize::from(off >> 4) * 4;
    if seg.get(TCP_FLAGS).is_none() || doff > seg.len() {
        return false;
    }
    let mut i = TCP_MIN_HEADER_LEN;
    while i < doff {
        let kind = seg[i];
        match kind {
            0 => return false,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = seg.get(i + 1) else {
            return false;
        };
        let len = usize::from(len);
        if len < 2 || i + len > doff {
            return false;
        }
        if kind == OPT_MSS && len == 4 {
            let v = i + 2;
            let mss = u16::from_be_bytes([seg[v], seg[v + 1]]);
            if mss <= max {
                return false;
            }
            // The checksum sums 16-bit words from the segment start: take the aligned
            // 32-bit window around the value, before and after.
            let w = if v.is_multiple_of(2) { v - 2 } else { v - 1 };
            let rd = |s: &[u8]| u32::from_be_bytes([s[w], s[w + 1], s[w + 2], s[w + 3]]);
            let old = rd(seg);
            seg[v..v + 2].copy_from_slice(&max.to_be_bytes());
            let new = rd(seg);
            let c = u16::from_be_bytes([seg[TCP_CHECKSUM], seg[TCP_CHECKSUM + 1]]);
            let c = Delta::ZERO.dword(old, new).apply(c);
            seg[TCP_CHECKSUM..TCP_CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
            return true;
        }
        i += len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::{build_tcp_syn, FrameSpec};
    use crate::packet::checksum::{l4_checksum, verify};
    use crate::packet::parse;

    /// A SYN with `opts` as its TCP options (padded to 4 bytes) and a valid checksum.
    fn syn(opts: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 200];
        let s = FrameSpec::new([2; 6], [4; 6], 0xC612_0002, 0xC613_0002);
        let n = build_tcp_syn(&mut b, &s, 40000, 80, 7).unwrap();
        b.truncate(n.max(54));
        let mut o = opts.to_vec();
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        b.truncate(54);
        b.extend_from_slice(&o);
        let total = (b.len() - 14) as u16;
        b[16..18].copy_from_slice(&total.to_be_bytes());
        b[24..26].copy_from_slice(&[0, 0]);
        let c = crate::packet::checksum::checksum(&b[14..34]);
        b[24..26].copy_from_slice(&c.to_be_bytes());
        b[46] = (((20 + o.len()) / 4) as u8) << 4;
        b[50..52].copy_from_slice(&[0, 0]);
        let c = l4_checksum(0xC612_0002, 0xC613_0002, 6, &b[34..]);
        b[50..52].copy_from_slice(&c.to_be_bytes());
        b
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let mut ps = Vec::new();
        ps.extend_from_slice(&f[26..34]);
        ps.extend_from_slice(&[0, 6]);
        ps.extend_from_slice(&((f.len() - 34) as u16).to_be_bytes());
        ps.extend_from_slice(&f[34..]);
        verify(&ps)
    }

    #[test]
    fn lowers_an_aligned_or_unaligned_mss() {
        // MSS first (aligned value), then after one NOP (unaligned value).
        for (opts, at) in [
            (vec![2u8, 4, 0x05, 0xb4, 1, 1, 4, 2], 56usize),
            (vec![1u8, 2, 4, 0x05, 0xb4, 1, 4, 2], 57),
            (vec![1u8, 1, 4, 2, 1, 2, 4, 0x05, 0xb4], 61),
        ] {
            let mut f = syn(&opts);
            assert!(tcp_ok(&f));
            let p = parse(&f).unwrap();
            assert!(clamp(&mut f, &p, 1360), "{opts:?}");
            assert_eq!(u16::from_be_bytes([f[at], f[at + 1]]), 1360, "{opts:?}");
            assert!(tcp_ok(&f), "checksum after clamping {opts:?}");
            let p = parse(&f).unwrap();
            assert!(!clamp(&mut f, &p, 1360), "already small enough");
        }
    }

    #[test]
    fn leaves_small_missing_and_non_syn_alone() {
        let mut f = syn(&[2, 4, 0x02, 0x18]); // 536
        let before = f.clone();
        let p = parse(&f).unwrap();
        assert!(!clamp(&mut f, &p, 1360));
        assert_eq!(f, before);
        let mut f = syn(&[1, 1, 1, 1]);
        let p = parse(&f).unwrap();
        assert!(!clamp(&mut f, &p, 1360));
        let mut f = syn(&[2, 4, 0x05, 0xb4]);
        f[47] = 0x10; // ACK only
        let p = parse(&f).unwrap();
        assert!(!clamp(&mut f, &p, 1360));
        // Malformed option lengths end the walk without panicking.
        for bad in [[2u8, 0, 0, 0], [2, 9, 5, 0], [8, 1, 0, 0]] {
            let mut f = syn(&bad);
            let p = parse(&f).unwrap();
            assert!(!clamp(&mut f, &p, 1360));
        }
    }

    #[test]
    fn parses_the_flag() {
        assert_eq!("auto".parse::<MssClamp>(), Ok(MssClamp::Auto));
        assert_eq!("1360".parse::<MssClamp>(), Ok(MssClamp::Fixed(1360)));
        assert_eq!("off".parse::<MssClamp>(), Ok(MssClamp::Off));
        assert!("12".parse::<MssClamp>().is_err());
        assert!("big".parse::<MssClamp>().is_err());
    }
}
