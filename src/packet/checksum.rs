//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Every 16-bit value in this module is the *numeric* value of a big-endian (network order)
//! field: read a field with `u16::from_be_bytes`, hand it here, and write the result back with
//! `to_be_bytes`. Checksums are one's complement sums, so `0x0000` and `0xFFFF` are the same
//! number ("+0" and "-0"); the functions below never produce `0xFFFF` from non-zero data, which
//! is what a full recomputation produces too.
//!
//! The incremental update is RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, generalised by
//! [`Delta`] to any number of changed words so that one fold serves a whole rewrite.
//! [`Delta`]'s arithmetic is byte-order independent (RFC 1071 2(B)): fed the native-order
//! numbers of every field it involves, checksum included, it gives the native-order number
//! of the updated checksum. The outer rewrite (`rewrite::set_outer`) uses it so, to spare
//! the byte swaps; nothing mixes the two orders in one `Delta`.

/// Folds a wide one's complement accumulator to 16 bits (end-around carry).
///
/// The result is `0` only when `sum` is `0`; any other multiple of `0xFFFF` folds to `0xFFFF`.
#[inline]
pub const fn fold(sum: u64) -> u16 {
    let s = (sum & 0xffff_ffff) + (sum >> 32);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Adds two 16-bit values in one's complement arithmetic.
#[inline]
pub const fn add(a: u16, b: u16) -> u16 {
    fold(a as u64 + b as u64)
}

/// Folds a 32-bit one's complement accumulator to 16 bits (two end-around carries suffice).
#[inline]
pub const fn fold32(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Returns the folded one's complement sum of `data` (not complemented).
///
/// `data` is read as big-endian 16-bit words; an odd trailing byte is padded with a zero low
/// byte, as RFC 1071 prescribes.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    // The one's complement sum is byte-order independent (RFC 1071 2(B)): sum native-endian
    // words, then convert the folded result once.
    u16::from_be(fold(sum_ne(data)))
}

/// Wide (unfolded) one's complement sum of `data` read as native-endian words.
#[inline]
fn sum_ne(data: &[u8]) -> u64 {
    // 2^64 ≡ 1 (mod 2^16 - 1), so 64-bit words with end-around carry sum to the same value as
    // 16-bit words.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let (s, carry) = acc.overflowing_add(u64::from_ne_bytes(w));
        acc = s + carry as u64;
    }
    let rem = chunks.remainder();
    let mut tail = [0u8; 8];
    // `rem.len() < 8` by construction of `chunks_exact`, so this never fails.
    if let Some(dst) = tail.get_mut(..rem.len()) {
        dst.copy_from_slice(rem);
    }
    let (s, carry) = acc.overflowing_add(u64::from_ne_bytes(tail));
    s + carry as u64
}

/// Returns `true` if the 20-byte option-less IPv4 header `h` sums to `0xFFFF`, i.e. its
/// header checksum verifies. Fully unrolled, no branches but the result.
#[inline(always)]
pub fn verify_ipv4_header20(h: &[u8; 20]) -> bool {
    let w = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as u64;
    // 0xFFFF is its own byte swap, so no conversion is needed for the comparison.
    fold(w(0) + w(4) + w(8) + w(12) + w(16)) == 0xffff
}

/// Returns the Internet checksum of `data`: the complement of its one's complement sum.
///
/// Write it into a zeroed checksum field to make the whole region sum to `0xFFFF`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Returns `true` if `data`, checksum field included, sums to `0xFFFF` (the receiver's check).
#[inline]
pub fn verify(data: &[u8]) -> bool {
    sum(data) == 0xffff
}

/// Folded one's complement sum of the IPv4 pseudo-header used by TCP and UDP.
///
/// `src` and `dst` are host-order IPv4 addresses, `len` the TCP/UDP length in bytes.
#[inline]
pub const fn pseudo_header_sum(src: u32, dst: u32, proto: u8, len: u16) -> u16 {
    // Six 16-bit values: the sum fits 19 bits, two end-around carries fold it.
    fold32((src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto as u32 + len as u32)
}

/// Full TCP/UDP checksum over the IPv4 pseudo-header and `segment` (header with a zeroed
/// checksum field, plus payload).
///
/// A result of `0` is returned as is; for UDP use [`udp_checksum`], which maps it to `0xFFFF`.
#[inline]
pub fn l4_checksum(src: u32, dst: u32, proto: u8, segment: &[u8]) -> u16 {
    let len = segment.len() as u16;
    !add(pseudo_header_sum(src, dst, proto, len), sum(segment))
}

/// Full UDP checksum (see [`l4_checksum`]); a computed `0` is sent as `0xFFFF`, because `0` on
/// the wire means "no checksum" (RFC 768).
#[inline]
pub fn udp_checksum(src: u32, dst: u32, segment: &[u8]) -> u16 {
    match l4_checksum(src, dst, super::ipv4::PROTO_UDP, segment) {
        0 => 0xffff,
        c => c,
    }
}

/// An accumulated change of checksummed words, to apply to one or more checksums at once.
///
/// Each [`word`](Delta::word) / [`dword`](Delta::dword) records `~old + new`; [`apply`](Delta::apply)
/// then computes RFC 1624 equation 3 for all of them with a single fold.
///
/// The accumulator is 32 bits wide: it holds up to 32 767 word changes, far more than any
/// header has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta(u32);

impl Delta {
    /// No change.
    pub const ZERO: Delta = Delta(0);

    /// Records that a 16-bit word changed from `old` to `new`.
    #[inline]
    #[must_use]
    pub const fn word(self, old: u16, new: u16) -> Self {
        Delta(self.0 + (!old) as u32 + new as u32)
    }

    /// Records that a 32-bit field (two aligned words, e.g. an IPv4 address) changed.
    #[inline]
    #[must_use]
    pub const fn dword(self, old: u32, new: u32) -> Self {
        let o = !old;
        Delta(self.0 + (o >> 16) + (o & 0xffff) + (new >> 16) + (new & 0xffff))
    }

    /// Combines two deltas.
    #[inline]
    #[must_use]
    pub const fn combine(self, other: Delta) -> Self {
        Delta(self.0 + other.0)
    }

    /// Returns the checksum `csum` updated for every recorded change (RFC 1624 eqn. 3).
    #[inline]
    #[must_use]
    pub const fn apply(self, csum: u16) -> u16 {
        !fold32((!csum) as u32 + self.0)
    }

    /// Like [`apply`](Delta::apply), with the UDP rule: a checksum of `0` means "none" and stays
    /// `0`; an updated checksum that comes out as `0` is written as `0xFFFF`.
    #[inline]
    #[must_use]
    pub const fn apply_udp(self, csum: u16) -> u16 {
        if csum == 0 {
            return 0;
        }
        match self.apply(csum) {
            0 => 0xffff,
            c => c,
        }
    }
}

/// RFC 1624 update of checksum `csum` for a 16-bit field changed from `old` to `new`.
#[inline]
#[must_use]
pub const fn csum_replace2(csum: u16, old: u16, new: u16) -> u16 {
    Delta::ZERO.word(old, new).apply(csum)
}

/// RFC 1624 update of checksum `csum` for an aligned 32-bit field (an IPv4 address, host
/// order) changed from `old` to `new`.
#[inline]
#[must_use]
pub const fn csum_replace4(csum: u16, old: u32, new: u32) -> u16 {
    Delta::ZERO.dword(old, new).apply(csum)
}

/// [`csum_replace2`] with the UDP rule (see [`Delta::apply_udp`]).
#[inline]
#[must_use]
pub const fn udp_csum_replace2(csum: u16, old: u16, new: u16) -> u16 {
    Delta::ZERO.word(old, new).apply_udp(csum)
}

/// [`csum_replace4`] with the UDP rule (see [`Delta::apply_udp`]).
#[inline]
#[must_use]
pub const fn udp_csum_replace4(csum: u16, old: u32, new: u32) -> u16 {
    Delta::ZERO.dword(old, new).apply_udp(csum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward RFC 1071 reference: 16-bit words, 32-bit accumulator.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for c in data.chunks(2) {
            let hi = c[0] as u64;
            let lo = c.get(1).copied().unwrap_or(0) as u64;
            acc += (hi << 8) | lo;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xDDF2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // Classic example header with checksum 0xB861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verify(&h));
    }

    #[test]
    fn odd_length_and_empty() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn fold_edges() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(add(0xffff, 1), 1);
        assert_eq!(fold32(0), 0);
        assert_eq!(fold32(u32::MAX), 0xffff);
        assert_eq!(fold32(0x1_fffe), 0xffff);
        assert_eq!(fold32(0x0001_0000), 1);
    }

    #[test]
    fn udp_rule() {
        // "No checksum" stays zero whatever changes.
        assert_eq!(udp_csum_replace2(0, 0x1234, 0x4321), 0);
        assert_eq!(udp_csum_replace4(0, 0x0a00_0001, 0xc633_6401), 0);
        // A change that makes the checksum come out as 0 is written as 0xFFFF.
        // csum' = ~(~csum + ~old + new); with csum = 0x0001, old = 0x0000, new = 0x0001:
        // ~1 + ~0 + 1 = 0xfffe + 0xffff + 1 -> fold 0xffff -> ~ = 0.
        assert_eq!(csum_replace2(0x0001, 0x0000, 0x0001), 0);
        assert_eq!(udp_csum_replace2(0x0001, 0x0000, 0x0001), 0xffff);
    }

    #[test]
    fn pseudo_header() {
        let src: u32 = 0xc0a8_0001;
        let dst: u32 = 0x0808_0808;
        let mut ph = Vec::new();
        ph.extend_from_slice(&src.to_be_bytes());
        ph.extend_from_slice(&dst.to_be_bytes());
        ph.extend_from_slice(&[0, 17, 0x01, 0x00]);
        assert_eq!(pseudo_header_sum(src, dst, 17, 0x100), reference_sum(&ph));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(sum(&data), reference_sum(&data));
        }

        #[test]
        fn pseudo_header_sum_matches_reference(
            src in prop_oneof![Just(u32::MAX), Just(0u32), any::<u32>()],
            dst in prop_oneof![Just(u32::MAX), Just(0u32), any::<u32>()],
            proto in any::<u8>(),
            len in prop_oneof![Just(u16::MAX), any::<u16>()],
        ) {
            let mut ph = Vec::new();
            ph.extend_from_slice(&src.to_be_bytes());
            ph.extend_from_slice(&dst.to_be_bytes());
            ph.extend_from_slice(&[0, proto]);
            ph.extend_from_slice(&len.to_be_bytes());
            prop_assert_eq!(pseudo_header_sum(src, dst, proto, len), reference_sum(&ph));
        }

        /// Incremental update of any aligned 16-bit word equals full recomputation.
        #[test]
        fn replace2_matches_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 4..128),
            idx in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            // Never all-zero data: a real header always has a non-zero byte, and all-zero data
            // is the one case where "+0" and "-0" differ in representation.
            data[0] |= 0x40;
            let words = data.len() / 2;
            let w = 1 + idx.index(words - 1); // word 0 stays non-zero
            let off = 2 * w;
            let csum = checksum(&data);
            let old = u16::from_be_bytes([data[off], data[off + 1]]);
            data[off..off + 2].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(csum_replace2(csum, old, new), checksum(&data));
        }

        /// Incremental update of an aligned 32-bit field equals full recomputation.
        #[test]
        fn replace4_matches_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 8..128),
            idx in any::<prop::sample::Index>(),
            new in any::<u32>(),
        ) {
            data[0] |= 0x40;
            let dwords = (data.len() - 2) / 4;
            let off = 2 + 4 * idx.index(dwords); // 2-byte aligned, skipping word 0
            let csum = checksum(&data);
            let old = u32::from_be_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]);
            data[off..off + 4].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(csum_replace4(csum, old, new), checksum(&data));
        }

        /// Several changes accumulated in one Delta equal full recomputation, and the
        /// checksummed region verifies.
        #[test]
        fn delta_many_changes(
            mut data in proptest::collection::vec(any::<u8>(), 16..96),
            changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u16>()), 1..8),
        ) {
            data[0] |= 0x40;
            // Checksum field lives in word 1.
            data[2] = 0;
            data[3] = 0;
            let c = checksum(&data);
            data[2..4].copy_from_slice(&c.to_be_bytes());
            let words = data.len() / 2;
            let mut d = Delta::ZERO;
            for (idx, new) in changes {
                let w = 2 + idx.index(words - 2);
                let off = 2 * w;
                let old = u16::from_be_bytes([data[off], data[off + 1]]);
                data[off..off + 2].copy_from_slice(&new.to_be_bytes());
                d = d.word(old, new);
            }
            let old_c = u16::from_be_bytes([data[2], data[3]]);
            let new_c = d.apply(old_c);
            data[2..4].copy_from_slice(&new_c.to_be_bytes());
            prop_assert!(verify(&data));
            data[2] = 0;
            data[3] = 0;
            prop_assert_eq!(new_c, checksum(&data));
        }

        /// The UDP helper agrees with a full UDP recomputation (which maps 0 to 0xFFFF).
        #[test]
        fn udp_replace_matches_recompute(
            src in any::<u32>(), dst in any::<u32>(), new_src in any::<u32>(),
            sport in any::<u16>(), dport in any::<u16>(), new_sport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut seg = Vec::new();
            seg.extend_from_slice(&sport.to_be_bytes());
            seg.extend_from_slice(&dport.to_be_bytes());
            seg.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            seg.extend_from_slice(&[0, 0]);
            seg.extend_from_slice(&payload);
            let c = udp_checksum(src, dst, &seg);
            let d = Delta::ZERO.dword(src, new_src).word(sport, new_sport);
            seg[0..2].copy_from_slice(&new_sport.to_be_bytes());
            prop_assert_eq!(d.apply_udp(c), udp_checksum(new_src, dst, &seg));
        }
    }
}
