//! IPv4 fragmentation on egress (RFC 791 3.2, RFC 1812 5.2.6-5.2.7), for packets without DF
//! that do not fit the egress MTU.
//!
//! [`Fragmenter`] walks an Ethernet + IPv4 frame and writes one fragment at a time into a
//! caller's buffer: every fragment carries the Ethernet header, an IPv4 header (the first one
//! with all options, the others with only the options whose "copied" flag is set), and a
//! payload that is a multiple of 8 bytes except in the last one. A packet that is already a
//! fragment is split again with its offset and its MF flag kept (the last piece keeps the
//! original MF). The header checksum of every fragment is computed in full; the transport
//! checksum, covering the whole datagram, is left as it is.

use crate::packet::checksum;
use crate::packet::ipv4::{
    IPV4_CHECKSUM, IPV4_FLAG_DF, IPV4_FLAG_MF, IPV4_FRAG, IPV4_FRAG_OFFSET_MASK,
    IPV4_MAX_HEADER_LEN, IPV4_MIN_HEADER_LEN, IPV4_TOTAL_LEN,
};

const ETH: usize = 14;

/// Why a frame cannot be fragmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragError {
    /// Not a well-formed Ethernet + IPv4 frame.
    Malformed,
    /// DF is set: the sender must get Fragmentation Needed instead.
    DontFragment,
    /// The MTU is below the 68 bytes every IPv4 link must carry (RFC 791).
    MtuTooSmall,
    /// The packet fits: nothing to fragment.
    Fits,
}

/// Splits one frame into fragments of at most `mtu` bytes of IPv4 packet each.
pub struct Fragmenter<'a> {
    frame: &'a [u8],
    /// Header length of the original packet (with all options).
    ihl: usize,
    /// End of the IPv4 packet in `frame`.
    end: usize,
    /// Header of the second and later fragments: the fixed header plus copied options.
    rest_hdr: [u8; IPV4_MAX_HEADER_LEN],
    rest_ihl: usize,
    mtu: usize,
    /// Offset (in 8-byte units) of the original packet, and its MF flag.
    base_units: usize,
    base_mf: bool,
    /// Payload bytes already written.
    done: usize,
}

impl<'a> Fragmenter<'a> {
    /// Prepares to fragment `frame` for an egress MTU of `mtu` bytes.
    pub fn new(frame: &'a [u8], mtu: usize) -> Result<Self, FragError> {
        if mtu < 68 {
            return Err(FragError::MtuTooSmall);
        }
        let ip = frame.get(ETH..).ok_or(FragError::Malformed)?;
        let h = ip
            .first_chunk::<IPV4_MIN_HEADER_LEN>()
            .ok_or(FragError::Malformed)?;
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if h[0] >> 4 != 4 || ihl < IPV4_MIN_HEADER_LEN || total < ihl || total > ip.len() {
            return Err(FragError::Malformed);
        }
        let frag = u16::from_be_bytes([h[IPV4_FRAG], h[IPV4_FRAG + 1]]);
        if frag & IPV4_FLAG_DF != 0 {
            return Err(FragError::DontFragment);
        }
        if total <= mtu {
            return Err(FragError::Fits);
        }
        let hdr = ip.get(..ihl).ok_or(FragError::Malformed)?;
        let mut rest_hdr = [0u8; IPV4_MAX_HEADER_LEN];
        rest_hdr[..IPV4_MIN_HEADER_LEN].copy_from_slice(h);
        let mut n = IPV4_MIN_HEADER_LEN;
        let mut i = IPV4_MIN_HEADER_LEN;
        while i < ihl {
            let kind = hdr[i];
            match kind {
                0 => break, // end of options
                1 => {
                    i += 1; // no-operation: not copied
                    continue;
                }
                _ => {}
            }
            let len = usize::from(*hdr.get(i + 1).ok_or(FragError::Malformed)?);
            if len < 2 || i + len > ihl {
                return Err(FragError::Malformed);
            }
            if kind & 0x80 != 0 {
                rest_hdr[n..n + len].copy_from_slice(&hdr[i..i + len]);
                n += len;
            }
            i += len;
        }
        // Pad with end-of-options to a multiple of 4 bytes (the buffer is zeroed).
        let rest_ihl = n.div_ceil(4) * 4;
        rest_hdr[0] = 0x40 | (rest_ihl / 4) as u8;
        if mtu < ihl + 8 {
            return Err(FragError::MtuTooSmall);
        }
        Ok(Fragmenter {
            frame,
            ihl,
            end: ETH + total,
            rest_hdr,
            rest_ihl,
            mtu,
            base_units: usize::from(frag & IPV4_FRAG_OFFSET_MASK),
            base_mf: frag & IPV4_FLAG_MF != 0,
            done: 0,
        })
    }

    fn payload_len(&self) -> usize {
        self.end - ETH - self.ihl
    }

    /// Payload bytes per fragment: the first and the later ones (multiples of 8).
    fn chunk(&self, first: bool) -> usize {
        let h = if first { self.ihl } else { self.rest_ihl };
        (self.mtu - h) & !7
    }

    /// How many fragments the packet makes.
    pub fn count(&self) -> usize {
        let total = self.payload_len();
        let first = self.chunk(true);
        if total <= first {
            return 1;
        }
        1 + (total - first).div_ceil(self.chunk(false))
    }

    /// Writes the next fragment (Ethernet header included) into `out` and returns its
    /// length, or `None` when every fragment has been written or `out` is too small.
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let total = self.payload_len();
        if self.done >= total {
            return None;
        }
        let first = self.done == 0;
        let len = self.chunk(first).min(total - self.done);
        let last = self.done + len >= total;
        let hdr: &[u8] = if first {
            self.frame.get(ETH..ETH + self.ihl)?
        } else {
            self.rest_hdr.get(..self.rest_ihl)?
        };
        let hl = hdr.len();
        let n = ETH + hl + len;
        let o = out.get_mut(..n)?;
        o[..ETH].copy_from_slice(self.frame.get(..ETH)?);
        o[ETH..ETH + hl].copy_from_slice(hdr);
        let src = ETH + self.ihl + self.done;
        o[ETH + hl..].copy_from_slice(self.frame.get(src..src + len)?);
        let ip = &mut o[ETH..ETH + hl];
        ip[IPV4_TOTAL_LEN..IPV4_TOTAL_LEN + 2].copy_from_slice(&((hl + len) as u16).to_be_bytes());
        let units = self.base_units + self.done / 8;
        let mf = if last { self.base_mf } else { true };
        let frag = (units as u16 & IPV4_FRAG_OFFSET_MASK) | if mf { IPV4_FLAG_MF } else { 0 };
        ip[IPV4_FRAG..IPV4_FRAG + 2].copy_from_slice(&frag.to_be_bytes());
        ip[IPV4_CHECKSUM..IPV4_CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(ip);
        ip[IPV4_CHECKSUM..IPV4_CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        self.done += len;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::{build_udp, FrameSpec};

    fn big_udp(payload: usize, df: bool) -> Vec<u8> {
        let mut b = vec![0u8; payload + 100];
        let mut s = FrameSpec::new([2; 6], [4; 6], 0xC612_0002, 0xC613_0002);
        s.payload_len = payload;
        let n = build_udp(&mut b, &s, 40000, 53).unwrap();
        b.truncate(n);
        for (i, x) in b[42..].iter_mut().enumerate() {
            *x = (i % 251) as u8;
        }
        if !df {
            b[20] = 0;
            b[24..26].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&b[14..34]);
            b[24..26].copy_from_slice(&c.to_be_bytes());
        }
        b
    }

    fn all(f: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let mut fr = Fragmenter::new(f, mtu).unwrap();
        let want = fr.count();
        let mut v = Vec::new();
        let mut buf = vec![0u8; 2000];
        while let Some(n) = fr.next_into(&mut buf) {
            v.push(buf[..n].to_vec());
        }
        assert_eq!(v.len(), want, "count() agrees");
        v
    }

    /// Reassembles fragments and checks every header on the way.
    fn reassemble(frags: &[Vec<u8>], mtu: usize) -> (Vec<u8>, bool) {
        let mut data = Vec::new();
        let mut mf = true;
        for f in frags {
            let ip = &f[14..];
            let ihl = usize::from(ip[0] & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            assert!(total <= mtu, "fragment of {total} bytes for MTU {mtu}");
            assert_eq!(total, ip.len());
            assert!(checksum::verify(&ip[..ihl]), "header checksum");
            let fw = u16::from_be_bytes([ip[6], ip[7]]);
            assert_eq!(usize::from(fw & 0x1fff) * 8, data.len(), "offset");
            mf = fw & IPV4_FLAG_MF != 0;
            data.extend_from_slice(&ip[ihl..total]);
        }
        (data, mf)
    }

    #[test]
    fn splits_a_1478_byte_packet_for_mtu_1400() {
        let f = big_udp(1450, false);
        let frags = all(&f, 1400);
        assert_eq!(frags.len(), 2);
        assert_eq!(frags[0].len(), 14 + 20 + 1376);
        let (data, mf) = reassemble(&frags, 1400);
        assert!(!mf, "the last fragment clears MF");
        assert_eq!(data, &f[34..]);
    }

    #[test]
    fn any_size_reassembles_to_the_original() {
        for payload in [1000usize, 1473, 2000, 3900] {
            for mtu in [68usize, 576, 1280, 1400, 1500] {
                let f = big_udp(payload, false);
                if f.len() - 14 <= mtu {
                    assert_eq!(Fragmenter::new(&f, mtu).err(), Some(FragError::Fits));
                    continue;
                }
                let frags = all(&f, mtu);
                for x in &frags[..frags.len() - 1] {
                    assert_eq!((x.len() - 34) % 8, 0, "non-last payloads are 8-byte units");
                }
                let (data, mf) = reassemble(&frags, mtu);
                assert!(!mf);
                assert_eq!(data, &f[34..], "payload {payload} mtu {mtu}");
            }
        }
    }

    #[test]
    fn refuses_df_tiny_mtus_and_garbage() {
        let f = big_udp(1450, true);
        assert_eq!(
            Fragmenter::new(&f, 1400).err(),
            Some(FragError::DontFragment)
        );
        let f = big_udp(1450, false);
        assert_eq!(Fragmenter::new(&f, 60).err(), Some(FragError::MtuTooSmall));
        assert_eq!(
            Fragmenter::new(&f[..30], 1400).err(),
            Some(FragError::Malformed)
        );
        let mut short = f.clone();
        short.truncate(600);
        assert_eq!(
            Fragmenter::new(&short, 576).err(),
            Some(FragError::Malformed)
        );
    }

    #[test]
    fn a_fragment_is_split_again_keeping_offset_and_mf() {
        // The first 1480 payload bytes of a bigger datagram: MF set, offset 0.
        let mut f = big_udp(1450, false);
        f[20] = 0x20;
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let frags = all(&f, 1000);
        let (data, mf) = reassemble(&frags, 1000);
        assert!(mf, "the last piece keeps the original MF");
        assert_eq!(data, &f[34..]);
    }

    #[test]
    fn only_copied_options_go_into_later_fragments() {
        // A packet with options: NOP, router alert (copied, 4 bytes), record route (not
        // copied, 7 bytes), padding.
        let base = big_udp(1450, false);
        let opts: [u8; 12] = [1, 0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0];
        let mut f = Vec::new();
        f.extend_from_slice(&base[..34]);
        f.extend_from_slice(&opts);
        f.extend_from_slice(&base[34..]);
        f[14] = 0x45 + 3;
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..46]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let frags = all(&f, 1000);
        assert_eq!(frags[0][14] & 0xf, 8, "the first keeps every option");
        assert_eq!(frags[1][14] & 0xf, 6, "later ones: 20 + router alert");
        assert_eq!(&frags[1][34..38], &[0x94, 4, 0, 0]);
        let (data, _) = reassemble(&frags, 1000);
        assert_eq!(data, &f[46..]);
    }
}
