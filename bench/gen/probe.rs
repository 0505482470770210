//! The probe carried at the start of every generated transport payload, and the frame
//! layout the generator stamps it into.
//!
//! Probe (18 bytes, big-endian, so that it fits the 18-byte payload of a 64-byte UDP frame):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 2 | magic `0x584E` ("XN") |
//! | 2 | 4 | flow id (0-based, global over all queues of one `send`) |
//! | 6 | 4 | sequence number within the flow, from 0 |
//! | 10 | 8 | CLOCK_MONOTONIC nanoseconds when the frame was queued for transmission |

use xnat::packet::builder::{build_tcp_syn, build_udp, FrameSpec};
use xnat::packet::checksum::Delta;
use xnat::packet::ether::{ETH_FCS_LEN, ETH_HEADER_LEN};
use xnat::packet::ipv4::{IPV4_CHECKSUM, IPV4_MIN_HEADER_LEN, IPV4_SRC, PROTO_TCP, PROTO_UDP};
use xnat::packet::l4::{TCP_CHECKSUM, TCP_MIN_HEADER_LEN, UDP_CHECKSUM, UDP_HEADER_LEN};

use crate::Proto;

/// Probe magic.
pub const MAGIC: u16 = 0x584e;
/// Probe length in bytes.
pub const PROBE_LEN: usize = 18;

/// The decoded probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Flow id.
    pub flow: u32,
    /// Sequence number within the flow.
    pub seq: u32,
    /// Transmit timestamp, CLOCK_MONOTONIC ns.
    pub ts_ns: u64,
}

impl Probe {
    /// Encodes the probe.
    #[inline]
    pub fn encode(&self) -> [u8; PROBE_LEN] {
        let mut b = [0u8; PROBE_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2..6].copy_from_slice(&self.flow.to_be_bytes());
        b[6..10].copy_from_slice(&self.seq.to_be_bytes());
        b[10..18].copy_from_slice(&self.ts_ns.to_be_bytes());
        b
    }

    /// Decodes a probe from the start of `payload`, if it carries one.
    #[inline]
    pub fn decode(payload: &[u8]) -> Option<Probe> {
        let b = payload.first_chunk::<PROBE_LEN>()?;
        if u16::from_be_bytes([b[0], b[1]]) != MAGIC {
            return None;
        }
        let mut flow = [0u8; 4];
        flow.copy_from_slice(&b[2..6]);
        let mut seq = [0u8; 4];
        seq.copy_from_slice(&b[6..10]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[10..18]);
        Some(Probe {
            flow: u32::from_be_bytes(flow),
            seq: u32::from_be_bytes(seq),
            ts_ns: u64::from_be_bytes(ts),
        })
    }

    /// The one's complement change the probe makes to a transport checksum computed over a
    /// zero-filled probe area.
    #[inline]
    pub fn delta(bytes: &[u8; PROBE_LEN]) -> Delta {
        let mut d = Delta::ZERO;
        for w in bytes.chunks_exact(2) {
            d = d.word(0, u16::from_be_bytes([w[0], w[1]]));
        }
        d
    }
}

/// Returns the probe of a received frame (Ethernet II, IPv4, UDP or TCP), if it has one.
pub fn probe_of(frame: &[u8]) -> Option<Probe> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(ETH_HEADER_LEN..)?;
    let vihl = *ip.first()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let ip = ip.get(..total)?;
    let l4 = ip.get(ihl..)?;
    let payload = match *ip.get(9)? {
        PROTO_UDP => l4.get(UDP_HEADER_LEN..)?,
        PROTO_TCP => l4.get(usize::from(*l4.get(12)? >> 4) * 4..)?,
        _ => return None,
    };
    Probe::decode(payload)
}

/// Per-flow header fields: source address and port with the checksums they imply (for a
/// zero-filled probe area).
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowHdr {
    /// Flow id written into the probe.
    pub id: u32,
    /// Source address, host order.
    pub src: u32,
    /// IPv4 header checksum.
    pub ip_csum: u16,
    /// Transport checksum with a zero probe.
    pub l4_csum: u16,
    /// Source port.
    pub sport: u16,
}

/// Where the generator writes into its frames.
#[derive(Clone, Debug)]
pub struct Template {
    /// The complete frame of the template flow (flow 0), probe area zero.
    pub frame: Vec<u8>,
    /// Transport protocol.
    pub proto: Proto,
    /// Offset of the probe.
    pub probe_off: usize,
    /// Offset of the transport checksum.
    pub l4_csum_off: usize,
    /// The template's source address, port and checksums.
    base: FlowHdr,
}

/// Offset of the transport header.
const L4: usize = ETH_HEADER_LEN + IPV4_MIN_HEADER_LEN;

/// Errors in building the template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The frame cannot hold the probe.
    #[error("a {proto} frame of {size} B (with FCS) cannot carry the {PROBE_LEN}-byte probe: use --size >= {min}")]
    TooSmall {
        /// Protocol name.
        proto: &'static str,
        /// Requested size.
        size: u16,
        /// Smallest size that works.
        min: usize,
    },
    /// The builder failed.
    #[error("building the frame: {0}")]
    Build(#[from] xnat::packet::builder::BuildError),
}

impl Template {
    /// Builds the template frame for `size` bytes with FCS (so `size - 4` in memory).
    pub fn new(
        proto: Proto,
        mut spec: FrameSpec,
        sport: u16,
        dport: u16,
        size: u16,
    ) -> Result<Template, TemplateError> {
        let frame_len = usize::from(size).saturating_sub(ETH_FCS_LEN);
        let (hdr, name) = match proto {
            Proto::Udp => (L4 + UDP_HEADER_LEN, "udp"),
            Proto::TcpSyn => (L4 + TCP_MIN_HEADER_LEN, "tcp-syn"),
        };
        if frame_len < hdr + PROBE_LEN {
            return Err(TemplateError::TooSmall {
                proto: name,
                size,
                min: hdr + PROBE_LEN + ETH_FCS_LEN,
            });
        }
        spec.payload_len = frame_len - hdr;
        let mut frame = vec![0u8; frame_len];
        let n = match proto {
            Proto::Udp => build_udp(&mut frame, &spec, sport, dport)?,
            Proto::TcpSyn => build_tcp_syn(&mut frame, &spec, sport, dport, 1)?,
        };
        frame.truncate(n);
        let l4_csum_off = match proto {
            Proto::Udp => L4 + UDP_CHECKSUM,
            Proto::TcpSyn => L4 + TCP_CHECKSUM,
        };
        let rd = |f: &[u8], off: usize| -> u16 {
            match f.get(off..off + 2) {
                Some(b) => u16::from_be_bytes([b[0], b[1]]),
                None => 0,
            }
        };
        let base = FlowHdr {
            id: 0,
            src: spec.src_ip,
            ip_csum: rd(&frame, ETH_HEADER_LEN + IPV4_CHECKSUM),
            l4_csum: rd(&frame, l4_csum_off),
            sport,
        };
        Ok(Template {
            frame,
            proto,
            probe_off: hdr,
            l4_csum_off,
            base,
        })
    }

    /// Header fields of a flow from address `src` and port `sport`.
    pub fn flow(&self, id: u32, src: u32, sport: u16) -> FlowHdr {
        let b = &self.base;
        let d = Delta::ZERO
            .word((b.src >> 16) as u16, (src >> 16) as u16)
            .word(b.src as u16, src as u16);
        let ip_csum = d.apply(b.ip_csum);
        let d = d.word(b.sport, sport);
        let l4_csum = match self.proto {
            Proto::Udp => d.apply_udp(b.l4_csum),
            Proto::TcpSyn => d.apply(b.l4_csum),
        };
        FlowHdr {
            id,
            src,
            ip_csum,
            l4_csum,
            sport,
        }
    }

    /// Writes flow `f`'s header fields and the probe (`seq`, `ts_ns`) into `frame`, a copy of
    /// the template frame, fixing the checksums.
    #[inline]
    pub fn stamp(&self, frame: &mut [u8], f: &FlowHdr, seq: u32, ts_ns: u64) {
        let probe = Probe {
            flow: f.id,
            seq,
            ts_ns,
        }
        .encode();
        let d = Probe::delta(&probe);
        let l4 = match self.proto {
            Proto::Udp => d.apply_udp(f.l4_csum),
            Proto::TcpSyn => d.apply(f.l4_csum),
        };
        put(frame, ETH_HEADER_LEN + IPV4_SRC, &f.src.to_be_bytes());
        put(
            frame,
            ETH_HEADER_LEN + IPV4_CHECKSUM,
            &f.ip_csum.to_be_bytes(),
        );
        put(frame, L4, &f.sport.to_be_bytes());
        put(frame, self.l4_csum_off, &l4.to_be_bytes());
        put(frame, self.probe_off, &probe);
    }
}

#[inline]
fn put(frame: &mut [u8], off: usize, bytes: &[u8]) {
    if let Some(d) = frame.get_mut(off..off + bytes.len()) {
        d.copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xnat::packet::{self, checksum};

    fn verify(frame: &[u8], proto: Proto) {
        let ip = &frame[ETH_HEADER_LEN..L4];
        assert!(checksum::verify(ip), "IPv4 checksum");
        let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
        let seg = &frame[L4..ETH_HEADER_LEN + total];
        let src = u32::from_be_bytes([frame[26], frame[27], frame[28], frame[29]]);
        let dst = u32::from_be_bytes([frame[30], frame[31], frame[32], frame[33]]);
        let p = match proto {
            Proto::Udp => PROTO_UDP,
            Proto::TcpSyn => PROTO_TCP,
        };
        let ph = checksum::pseudo_header_sum(src, dst, p, seg.len() as u16);
        assert_eq!(checksum::add(ph, checksum::sum(seg)), 0xffff, "L4 checksum");
    }

    #[test]
    fn stamped_frames_verify_and_decode() {
        for proto in [Proto::Udp, Proto::TcpSyn] {
            for size in [64u16, 76, 128, 512, 1518] {
                let spec = FrameSpec::new([2; 6], [4; 6], 0xc612_0002, 0xc613_0002);
                let t = match Template::new(proto, spec, 1024, 9, size) {
                    Ok(t) => t,
                    Err(_) => {
                        assert!(proto == Proto::TcpSyn && size < 76);
                        continue;
                    }
                };
                assert_eq!(t.frame.len(), usize::from(size) - 4);
                for (id, src, sport, seq, ts) in [
                    (0u32, 0xc612_0002u32, 1024u16, 0u32, 0u64),
                    (7, 0xc612_00fe, 65535, 0xffff_ffff, u64::MAX),
                    (123_456, 0xc612_0010, 4000, 42, 1_234_567_890_123),
                ] {
                    let f = t.flow(id, src, sport);
                    let mut frame = t.frame.clone();
                    t.stamp(&mut frame, &f, seq, ts);
                    verify(&frame, proto);
                    let p = probe_of(&frame).expect("probe");
                    assert_eq!(
                        p,
                        Probe {
                            flow: id,
                            seq,
                            ts_ns: ts
                        }
                    );
                    let parsed = packet::parse(&frame).expect("parses");
                    assert_eq!(parsed.tuple().src, src);
                    assert_eq!(parsed.tuple().sport, sport);
                }
            }
        }
    }

    #[test]
    fn foreign_frames_have_no_probe() {
        assert_eq!(probe_of(&[]), None);
        assert_eq!(probe_of(&[0u8; 60]), None);
        let spec = FrameSpec::new([2; 6], [4; 6], 1, 2);
        let mut buf = [0u8; 128];
        let n = build_udp(&mut buf, &spec, 1, 2).expect("frame");
        assert_eq!(probe_of(&buf[..n]), None);
        // Truncated mid-probe.
        let t = Template::new(Proto::Udp, spec, 1, 2, 64).expect("template");
        let mut f = t.frame.clone();
        t.stamp(&mut f, &t.flow(1, 1, 1), 1, 1);
        assert!(probe_of(&f).is_some());
        assert_eq!(probe_of(&f[..f.len() - 1]), None);
    }
}
