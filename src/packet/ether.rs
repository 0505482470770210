//! Ethernet II framing: constants and MAC address access.
//!
//! Frames handed to this module start with the destination MAC; there is no preamble and no
//! FCS (as delivered by AF_XDP).

/// A 48-bit MAC address, in wire order.
pub type MacAddr = [u8; 6];

/// Length of an untagged Ethernet II header: destination MAC, source MAC, EtherType.
pub const ETH_HEADER_LEN: usize = 14;
/// Smallest Ethernet frame without FCS; shorter payloads are padded up to it.
pub const ETH_MIN_FRAME_LEN: usize = 60;
/// Largest standard (non-jumbo) Ethernet frame without FCS: 14-byte header + 1500-byte MTU.
pub const ETH_MAX_FRAME_LEN: usize = 1514;
/// Length of the frame check sequence the NIC appends on the wire (and strips on receive);
/// "64 B" and "1518 B" test frames are 60 B and 1514 B in a buffer.
pub const ETH_FCS_LEN: usize = 4;

/// Offset of the destination MAC address.
pub const ETH_DST: usize = 0;
/// Offset of the source MAC address.
pub const ETH_SRC: usize = 6;
/// Offset of the EtherType field.
pub const ETH_TYPE: usize = 12;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of an IEEE 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of an IEEE 802.1ad (QinQ) service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Pre-standard QinQ EtherType still seen in the field.
pub const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

/// Returns the EtherType of `frame`, or `None` if it is shorter than an Ethernet header.
#[inline]
pub fn ethertype(frame: &[u8]) -> Option<u16> {
    let h = frame.first_chunk::<ETH_HEADER_LEN>()?;
    Some(u16::from_be_bytes([h[ETH_TYPE], h[ETH_TYPE + 1]]))
}

/// Returns the destination MAC address of `frame`, if it has one.
#[inline]
pub fn dst_mac(frame: &[u8]) -> Option<MacAddr> {
    let h = frame.first_chunk::<ETH_HEADER_LEN>()?;
    let mut m = [0u8; 6];
    m.copy_from_slice(&h[ETH_DST..ETH_DST + 6]);
    Some(m)
}

/// Returns the source MAC address of `frame`, if it has one.
#[inline]
pub fn src_mac(frame: &[u8]) -> Option<MacAddr> {
    let h = frame.first_chunk::<ETH_HEADER_LEN>()?;
    let mut m = [0u8; 6];
    m.copy_from_slice(&h[ETH_SRC..ETH_SRC + 6]);
    Some(m)
}

/// Writes the destination and source MAC addresses of `frame` (the next hop's and the egress
/// interface's).
///
/// A frame shorter than an Ethernet header is left untouched.
#[inline]
pub fn set_macs(frame: &mut [u8], dst: MacAddr, src: MacAddr) {
    if let Some(h) = frame.first_chunk_mut::<12>() {
        h[ETH_DST..ETH_DST + 6].copy_from_slice(&dst);
        h[ETH_SRC..ETH_SRC + 6].copy_from_slice(&src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_roundtrip() {
        let mut f = [0u8; 60];
        f[12] = 0x08;
        let d = [1, 2, 3, 4, 5, 6];
        let s = [0xa, 0xb, 0xc, 0xd, 0xe, 0xf];
        set_macs(&mut f, d, s);
        assert_eq!(dst_mac(&f), Some(d));
        assert_eq!(src_mac(&f), Some(s));
        assert_eq!(ethertype(&f), Some(ETHERTYPE_IPV4));
        assert_eq!(&f[12..14], &[0x08, 0x00]);
    }

    #[test]
    fn short_frames_are_left_alone() {
        let mut f = [0u8; 11];
        set_macs(&mut f, [0xff; 6], [0xff; 6]);
        assert_eq!(f, [0u8; 11]);
        assert_eq!(dst_mac(&f), None);
        assert_eq!(src_mac(&[0u8; 13]), None);
        assert_eq!(ethertype(&f), None);
    }
}
