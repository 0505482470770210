//! IPFIX (RFC 7011) message encoding of [`NatEvent`]s with the RFC 8158 information
//! elements: one template per event kind, records grouped into one data set per kind,
//! messages bounded in size, sequence numbers counting data records (RFC 7011 §3.1).
//!
//! Sets are not padded (padding is optional, RFC 7011 §3.3.1); every length written is
//! checked against the 16-bit fields it goes into.

use super::event::{EventKind, NatEvent, KINDS, QUOTA_MAX_ENTRIES_PER_USER};
use super::LogError;

/// IPFIX version number in the message header.
pub const VERSION: u16 = 10;
/// Message header length.
pub const HEADER_LEN: usize = 16;
/// Set header length.
pub const SET_HEADER_LEN: usize = 4;
/// Set ID of template sets.
pub const TEMPLATE_SET_ID: u16 = 2;
/// Template ID of the first event kind; kind `i` uses `FIRST_TEMPLATE_ID + i`.
pub const FIRST_TEMPLATE_ID: u16 = 256;
/// Largest IPFIX message over UDP on IPv4 (65535 − 20 − 8).
pub const MAX_MESSAGE_LEN: usize = 65507;

/// IANA IPFIX information element identifiers used here.
pub mod ie {
    /// protocolIdentifier (unsigned8).
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    /// sourceTransportPort (unsigned16).
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    /// sourceIPv4Address (ipv4Address).
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    /// destinationTransportPort (unsigned16).
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    /// destinationIPv4Address (ipv4Address).
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    /// postNATSourceIPv4Address (ipv4Address).
    pub const POST_NAT_SOURCE_IPV4_ADDRESS: u16 = 225;
    /// postNAPTSourceTransportPort (unsigned16).
    pub const POST_NAPT_SOURCE_TRANSPORT_PORT: u16 = 227;
    /// natEvent (unsigned8).
    pub const NAT_EVENT: u16 = 230;
    /// natPoolId (unsigned32).
    pub const NAT_POOL_ID: u16 = 283;
    /// observationTimeMilliseconds (dateTimeMilliseconds).
    pub const OBSERVATION_TIME_MILLISECONDS: u16 = 323;
    /// portRangeStart (unsigned16).
    pub const PORT_RANGE_START: u16 = 361;
    /// portRangeEnd (unsigned16).
    pub const PORT_RANGE_END: u16 = 362;
    /// portRangeStepSize (unsigned16).
    pub const PORT_RANGE_STEP_SIZE: u16 = 363;
    /// portRangeNumPorts (unsigned16).
    pub const PORT_RANGE_NUM_PORTS: u16 = 364;
    /// natQuotaExceededEvent (unsigned32).
    pub const NAT_QUOTA_EXCEEDED_EVENT: u16 = 466;
    /// maxEntriesPerUser (unsigned32).
    pub const MAX_ENTRIES_PER_USER: u16 = 473;
}

use ie::*;

/// (information element, length) pairs of one template.
type Fields = &'static [(u16, u16)];

const SESSION: Fields = &[
    (OBSERVATION_TIME_MILLISECONDS, 8),
    (NAT_EVENT, 1),
    (SOURCE_IPV4_ADDRESS, 4),
    (POST_NAT_SOURCE_IPV4_ADDRESS, 4),
    (PROTOCOL_IDENTIFIER, 1),
    (SOURCE_TRANSPORT_PORT, 2),
    (POST_NAPT_SOURCE_TRANSPORT_PORT, 2),
];
const SESSION_DST: Fields = &[
    (OBSERVATION_TIME_MILLISECONDS, 8),
    (NAT_EVENT, 1),
    (SOURCE_IPV4_ADDRESS, 4),
    (POST_NAT_SOURCE_IPV4_ADDRESS, 4),
    (PROTOCOL_IDENTIFIER, 1),
    (SOURCE_TRANSPORT_PORT, 2),
    (POST_NAPT_SOURCE_TRANSPORT_PORT, 2),
    (DESTINATION_IPV4_ADDRESS, 4),
    (DESTINATION_TRANSPORT_PORT, 2),
];
const ADDRESSES_EXHAUSTED: Fields = &[
    (OBSERVATION_TIME_MILLISECONDS, 8),
    (NAT_EVENT, 1),
    (NAT_POOL_ID, 4),
];
const PORTS_EXHAUSTED: Fields = &[
    (OBSERVATION_TIME_MILLISECONDS, 8),
    (NAT_EVENT, 1),
    (POST_NAT_SOURCE_IPV4_ADDRESS, 4),
];
const QUOTA_EXCEEDED: Fields = &[
    (OBSERVATION_TIME_MILLISECONDS, 8),
    (NAT_EVENT, 1),
    (NAT_QUOTA_EXCEEDED_EVENT, 4),
    (MAX_ENTRIES_PER_USER, 4),
    (SOURCE_IPV4_ADDRESS, 4),
];
const PORT_BLOCK: Fields = &[
    (OBSERVATION_TIME_MILLISECONDS, 8),
    (NAT_EVENT, 1),
    (SOURCE_IPV4_ADDRESS, 4),
    (POST_NAT_SOURCE_IPV4_ADDRESS, 4),
    (PORT_RANGE_START, 2),
    (PORT_RANGE_END, 2),
    (PORT_RANGE_STEP_SIZE, 2),
    (PORT_RANGE_NUM_PORTS, 2),
];

/// The fields of the template of event kind `index` (see [`EventKind::index`]).
pub fn template_fields(index: usize, destinations: bool) -> Fields {
    match index {
        0 | 1 if destinations => SESSION_DST,
        0 | 1 => SESSION,
        2 => ADDRESSES_EXHAUSTED,
        3 => PORTS_EXHAUSTED,
        4 => QUOTA_EXCEEDED,
        _ => PORT_BLOCK,
    }
}

/// The template ID of event kind `index`.
pub fn template_id(index: usize) -> u16 {
    // KINDS is 7: the sum always fits.
    FIRST_TEMPLATE_ID + index as u16
}

/// Length of one data record of event kind `index`.
pub fn record_len(index: usize, destinations: bool) -> usize {
    template_fields(index, destinations)
        .iter()
        .map(|&(_, l)| usize::from(l))
        .sum()
}

/// Length of the template set holding every template.
pub fn template_set_len(destinations: bool) -> usize {
    SET_HEADER_LEN
        + (0..KINDS)
            .map(|i| 4 + 4 * template_fields(i, destinations).len())
            .sum::<usize>()
}

/// Smallest message size limit accepted: header, all templates and the largest record.
pub fn min_message_len(destinations: bool) -> usize {
    let largest = (0..KINDS)
        .map(|i| record_len(i, destinations))
        .max()
        .unwrap_or(0);
    HEADER_LEN + template_set_len(destinations) + SET_HEADER_LEN + largest
}

fn u16_len(n: usize) -> Result<u16, LogError> {
    u16::try_from(n).map_err(|_| LogError::TooLong(n))
}

/// Builds IPFIX messages: records are added until the next one would not fit in the size
/// limit, then [`Encoder::finish`] writes the message and starts the next one.
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    destinations: bool,
    max_len: usize,
    /// Data records in all messages finished so far (modulo 2^32): the next header's
    /// sequence number.
    seq: u32,
    /// Encoded records waiting, per event kind.
    sets: [Vec<u8>; KINDS],
    records: u32,
    templates: bool,
}

impl Encoder {
    /// An encoder for observation domain `domain` whose messages stay within `max_len`
    /// bytes; `destinations` adds the destination address and port to session records.
    pub fn new(domain: u32, destinations: bool, max_len: usize) -> Result<Encoder, LogError> {
        let min = min_message_len(destinations);
        if !(min..=MAX_MESSAGE_LEN).contains(&max_len) {
            return Err(LogError::MessageSize {
                value: max_len,
                min,
                max: MAX_MESSAGE_LEN,
            });
        }
        Ok(Encoder {
            domain,
            destinations,
            max_len,
            seq: 0,
            sets: Default::default(),
            records: 0,
            templates: false,
        })
    }

    /// The sequence number the next message will carry.
    pub fn sequence(&self) -> u32 {
        self.seq
    }

    /// Data records in the message being built.
    pub fn records(&self) -> u32 {
        self.records
    }

    /// Whether the message being built holds nothing (no record, no template).
    pub fn is_empty(&self) -> bool {
        self.records == 0 && !self.templates
    }

    /// Puts the template set into the message being built (call it before the first
    /// record of a message, so that the size limit accounts for it).
    pub fn include_templates(&mut self) {
        self.templates = true;
    }

    /// Whether the message being built carries the templates.
    pub fn has_templates(&self) -> bool {
        self.templates
    }

    /// Length of the message if it were finished now.
    pub fn len(&self) -> usize {
        let mut n = HEADER_LEN;
        if self.templates {
            n += template_set_len(self.destinations);
        }
        for s in &self.sets {
            if !s.is_empty() {
                n += SET_HEADER_LEN + s.len();
            }
        }
        n
    }

    /// Adds one record; false (and nothing added) if it would push the message past the
    /// size limit: finish the message, then add it to the next one.
    pub fn push(&mut self, ev: &NatEvent) -> bool {
        let i = ev.kind.index();
        let rec = record_len(i, self.destinations);
        let extra = if self.sets[i].is_empty() {
            SET_HEADER_LEN + rec
        } else {
            rec
        };
        if self.len() + extra > self.max_len {
            return false;
        }
        let b = &mut self.sets[i];
        b.extend_from_slice(&ev.time_ms.to_be_bytes());
        b.push(ev.kind.nat_event());
        match ev.kind {
            EventKind::SessionCreate(s) | EventKind::SessionDelete(s) => {
                b.extend_from_slice(&s.inside.to_be_bytes());
                b.extend_from_slice(&s.nat.to_be_bytes());
                b.push(s.proto);
                b.extend_from_slice(&s.inside_port.to_be_bytes());
                b.extend_from_slice(&s.nat_port.to_be_bytes());
                if self.destinations {
                    b.extend_from_slice(&s.dst.to_be_bytes());
                    b.extend_from_slice(&s.dst_port.to_be_bytes());
                }
            }
            EventKind::AddressesExhausted { pool_id } => {
                b.extend_from_slice(&pool_id.to_be_bytes());
            }
            EventKind::PortsExhausted { nat } => {
                b.extend_from_slice(&nat.to_be_bytes());
            }
            EventKind::QuotaExceeded { inside, limit } => {
                b.extend_from_slice(&QUOTA_MAX_ENTRIES_PER_USER.to_be_bytes());
                b.extend_from_slice(&limit.to_be_bytes());
                b.extend_from_slice(&inside.to_be_bytes());
            }
            EventKind::PortBlockAlloc(p) | EventKind::PortBlockDealloc(p) => {
                b.extend_from_slice(&p.inside.to_be_bytes());
                b.extend_from_slice(&p.nat.to_be_bytes());
                b.extend_from_slice(&p.start.to_be_bytes());
                b.extend_from_slice(&p.end.to_be_bytes());
                b.extend_from_slice(&p.step.to_be_bytes());
                b.extend_from_slice(&p.num_ports.to_be_bytes());
            }
        }
        self.records += 1;
        true
    }

    /// Writes the template set alone (no header) to `out`.
    pub fn write_template_set(&self, out: &mut Vec<u8>) -> Result<(), LogError> {
        let len = u16_len(template_set_len(self.destinations))?;
        out.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        for i in 0..KINDS {
            let f = template_fields(i, self.destinations);
            out.extend_from_slice(&template_id(i).to_be_bytes());
            out.extend_from_slice(&u16_len(f.len())?.to_be_bytes());
            for &(id, l) in f {
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&l.to_be_bytes());
            }
        }
        Ok(())
    }

    /// Writes the message being built into `out` (cleared first) with `export_time` (UTC
    /// seconds), advances the sequence number by its data records and starts an empty
    /// message. Returns the number of data records written.
    pub fn finish(&mut self, export_time: u32, out: &mut Vec<u8>) -> Result<u32, LogError> {
        out.clear();
        let total = u16_len(self.len())?;
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&export_time.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.domain.to_be_bytes());
        if self.templates {
            self.write_template_set(out)?;
        }
        for (i, s) in self.sets.iter_mut().enumerate() {
            if s.is_empty() {
                continue;
            }
            out.extend_from_slice(&template_id(i).to_be_bytes());
            out.extend_from_slice(&u16_len(SET_HEADER_LEN + s.len())?.to_be_bytes());
            out.extend_from_slice(s);
            s.clear();
        }
        debug_assert_eq!(out.len(), usize::from(total));
        let n = self.records;
        self.seq = self.seq.wrapping_add(n);
        self.records = 0;
        self.templates = false;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::event::{nat_event, PortBlock, Session};
    use std::collections::HashMap;

    /// A decoded data record: field id -> raw bytes, plus its template id.
    #[derive(Debug)]
    struct Rec {
        tid: u16,
        f: HashMap<u16, Vec<u8>>,
    }

    impl Rec {
        fn uint(&self, id: u16) -> u64 {
            let v = self
                .f
                .get(&id)
                .unwrap_or_else(|| panic!("field {id} missing"));
            v.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
        }
    }

    struct Msg {
        export_time: u32,
        seq: u32,
        domain: u32,
        records: Vec<Rec>,
        templates_seen: usize,
    }

    fn be16(b: &[u8], o: usize) -> u16 {
        u16::from_be_bytes([b[o], b[o + 1]])
    }
    fn be32(b: &[u8], o: usize) -> u32 {
        u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
    }

    /// A small independent IPFIX decoder: templates learnt into `tpl`, which persists
    /// across messages as a collector's would.
    fn decode(m: &[u8], tpl: &mut HashMap<u16, Vec<(u16, u16)>>) -> Msg {
        assert!(m.len() >= 16);
        assert_eq!(be16(m, 0), 10, "version");
        assert_eq!(usize::from(be16(m, 2)), m.len(), "message length");
        let mut out = Msg {
            export_time: be32(m, 4),
            seq: be32(m, 8),
            domain: be32(m, 12),
            records: vec![],
            templates_seen: 0,
        };
        let mut o = 16;
        while o < m.len() {
            let sid = be16(m, o);
            let slen = usize::from(be16(m, o + 2));
            assert!(slen >= 4 && o + slen <= m.len(), "set length {slen} at {o}");
            let end = o + slen;
            let mut p = o + 4;
            if sid == 2 {
                while p + 4 <= end {
                    let tid = be16(m, p);
                    let n = usize::from(be16(m, p + 2));
                    p += 4;
                    let mut fields = vec![];
                    for _ in 0..n {
                        let id = be16(m, p);
                        assert_eq!(id & 0x8000, 0, "no enterprise bit");
                        fields.push((id, be16(m, p + 2)));
                        p += 4;
                    }
                    tpl.insert(tid, fields);
                    out.templates_seen += 1;
                }
            } else {
                assert!(sid >= 256, "data set id {sid}");
                let fields = tpl.get(&sid).expect("template known").clone();
                let rl: usize = fields.iter().map(|&(_, l)| usize::from(l)).sum();
                while p + rl <= end {
                    let mut f = HashMap::new();
                    for &(id, l) in &fields {
                        f.insert(id, m[p..p + usize::from(l)].to_vec());
                        p += usize::from(l);
                    }
                    out.records.push(Rec { tid: sid, f });
                }
            }
            assert_eq!(p, end, "no trailing bytes in a set");
            o = end;
        }
        out
    }

    fn session(i: u32) -> Session {
        Session {
            proto: 6,
            inside: 0xC612_0000 + i,
            inside_port: 40000 + i as u16,
            nat: 0xC613_0001,
            nat_port: 1024 + i as u16,
            dst: 0xC613_0002,
            dst_port: 443,
        }
    }

    fn all_kinds(t: u64) -> Vec<NatEvent> {
        let b = PortBlock::contiguous(0xC612_0002, 0xC613_0001, 1536, 2047).unwrap();
        vec![
            NatEvent::at(t, EventKind::SessionCreate(session(1))),
            NatEvent::at(t + 1, EventKind::SessionDelete(session(2))),
            NatEvent::at(t + 2, EventKind::AddressesExhausted { pool_id: 7 }),
            NatEvent::at(t + 3, EventKind::PortsExhausted { nat: 0xC613_0001 }),
            NatEvent::at(
                t + 4,
                EventKind::QuotaExceeded {
                    inside: 0xC612_0003,
                    limit: 4,
                },
            ),
            NatEvent::at(t + 5, EventKind::PortBlockAlloc(b)),
            NatEvent::at(t + 6, EventKind::PortBlockDealloc(b)),
        ]
    }

    #[test]
    fn round_trip_every_kind_with_and_without_destinations() {
        for dst in [false, true] {
            let mut e = Encoder::new(42, dst, 1400).unwrap();
            e.include_templates();
            let evs = all_kinds(1_700_000_000_123);
            for ev in &evs {
                assert!(e.push(ev));
            }
            let mut out = vec![];
            assert_eq!(e.finish(1_700_000_000, &mut out).unwrap(), 7);
            let mut tpl = HashMap::new();
            let m = decode(&out, &mut tpl);
            assert_eq!((m.export_time, m.seq, m.domain), (1_700_000_000, 0, 42));
            assert_eq!(m.templates_seen, KINDS);
            assert_eq!(m.records.len(), 7);
            // Records come grouped by kind, kinds in index order, which is how they were pushed.
            for (r, ev) in m.records.iter().zip(&evs) {
                assert_eq!(r.tid, template_id(ev.kind.index()));
                assert_eq!(r.uint(OBSERVATION_TIME_MILLISECONDS), ev.time_ms);
                assert_eq!(r.uint(NAT_EVENT), u64::from(ev.kind.nat_event()));
                match ev.kind {
                    EventKind::SessionCreate(s) | EventKind::SessionDelete(s) => {
                        assert_eq!(r.uint(SOURCE_IPV4_ADDRESS), u64::from(s.inside));
                        assert_eq!(r.uint(POST_NAT_SOURCE_IPV4_ADDRESS), u64::from(s.nat));
                        assert_eq!(r.uint(PROTOCOL_IDENTIFIER), 6);
                        assert_eq!(r.uint(SOURCE_TRANSPORT_PORT), u64::from(s.inside_port));
                        assert_eq!(
                            r.uint(POST_NAPT_SOURCE_TRANSPORT_PORT),
                            u64::from(s.nat_port)
                        );
                        assert_eq!(r.f.contains_key(&DESTINATION_IPV4_ADDRESS), dst);
                        if dst {
                            assert_eq!(r.uint(DESTINATION_IPV4_ADDRESS), u64::from(s.dst));
                            assert_eq!(r.uint(DESTINATION_TRANSPORT_PORT), 443);
                        }
                    }
                    EventKind::AddressesExhausted { pool_id } => {
                        assert_eq!(r.uint(NAT_POOL_ID), u64::from(pool_id))
                    }
                    EventKind::PortsExhausted { nat } => {
                        assert_eq!(r.uint(POST_NAT_SOURCE_IPV4_ADDRESS), u64::from(nat))
                    }
                    EventKind::QuotaExceeded { inside, limit } => {
                        assert_eq!(r.uint(NAT_QUOTA_EXCEEDED_EVENT), 3);
                        assert_eq!(r.uint(MAX_ENTRIES_PER_USER), u64::from(limit));
                        assert_eq!(r.uint(SOURCE_IPV4_ADDRESS), u64::from(inside));
                    }
                    EventKind::PortBlockAlloc(b) | EventKind::PortBlockDealloc(b) => {
                        assert_eq!(r.uint(SOURCE_IPV4_ADDRESS), u64::from(b.inside));
                        assert_eq!(r.uint(POST_NAT_SOURCE_IPV4_ADDRESS), u64::from(b.nat));
                        assert_eq!(r.uint(PORT_RANGE_START), 1536);
                        assert_eq!(r.uint(PORT_RANGE_END), 2047);
                        assert_eq!(r.uint(PORT_RANGE_STEP_SIZE), 1);
                        assert_eq!(r.uint(PORT_RANGE_NUM_PORTS), 512);
                    }
                }
            }
        }
    }

    #[test]
    fn exact_bytes_of_a_port_block_message_without_templates() {
        let mut e = Encoder::new(1, false, 1400).unwrap();
        let b = PortBlock::contiguous(0xC612_0002, 0xC613_0001, 1024, 1535).unwrap();
        assert!(e.push(&NatEvent::at(
            0x0102_0304_0506,
            EventKind::PortBlockAlloc(b)
        )));
        let mut out = vec![];
        e.finish(0x6000_0000, &mut out).unwrap();
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            0x00, 0x0a, 0x00, 0x2d,             // version 10, length 45
            0x60, 0x00, 0x00, 0x00,             // export time
            0x00, 0x00, 0x00, 0x00,             // sequence 0
            0x00, 0x00, 0x00, 0x01,             // observation domain 1
            0x01, 0x05, 0x00, 0x1d,             // set 261 (port block allocation), length 29
            0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, // observationTimeMilliseconds
            nat_event::PORT_BLOCK_ALLOCATION,   // natEvent 16
            198, 18, 0, 2,                      // sourceIPv4Address
            198, 19, 0, 1,                      // postNATSourceIPv4Address
            0x04, 0x00, 0x05, 0xff,             // portRangeStart 1024, portRangeEnd 1535
            0x00, 0x01, 0x02, 0x00,             // portRangeStepSize 1, portRangeNumPorts 512
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn exact_bytes_of_the_session_template() {
        let e = Encoder::new(1, false, 1400).unwrap();
        let mut out = vec![];
        e.write_template_set(&mut out).unwrap();
        assert_eq!(out.len(), template_set_len(false));
        assert_eq!(&out[0..4], &[0, 2, 0, out.len() as u8]);
        #[rustfmt::skip]
        let session: [u8; 32] = [
            0x01, 0x00, 0x00, 0x07,     // template 256, 7 fields
            0x01, 0x43, 0x00, 0x08,     // 323 observationTimeMilliseconds, 8
            0x00, 0xe6, 0x00, 0x01,     // 230 natEvent, 1
            0x00, 0x08, 0x00, 0x04,     // 8 sourceIPv4Address, 4
            0x00, 0xe1, 0x00, 0x04,     // 225 postNATSourceIPv4Address, 4
            0x00, 0x04, 0x00, 0x01,     // 4 protocolIdentifier, 1
            0x00, 0x07, 0x00, 0x02,     // 7 sourceTransportPort, 2
            0x00, 0xe3, 0x00, 0x02,     // 227 postNAPTSourceTransportPort, 2
        ];
        assert_eq!(&out[4..36], &session);
    }

    #[test]
    fn messages_stay_under_the_limit_and_sequence_counts_data_records() {
        let max = 300;
        let mut e = Encoder::new(9, false, max).unwrap();
        let mut tpl = HashMap::new();
        let mut out = vec![];
        let mut expect_seq = 0u32;
        let mut decoded = 0usize;
        let total = 200u32;
        let mut i = 0;
        let mut first = true;
        while i < total {
            if e.is_empty() && first {
                e.include_templates();
                first = false;
            }
            let ev = NatEvent::at(u64::from(i), EventKind::SessionCreate(session(i)));
            if e.push(&ev) {
                i += 1;
                continue;
            }
            assert!(e.records() > 0, "a record must fit in an empty message");
            let n = e.finish(1, &mut out).unwrap();
            assert!(out.len() <= max);
            let m = decode(&out, &mut tpl);
            assert_eq!(m.seq, expect_seq);
            assert_eq!(m.records.len(), n as usize);
            expect_seq += n;
            decoded += m.records.len();
        }
        let n = e.finish(1, &mut out).unwrap();
        let m = decode(&out, &mut tpl);
        assert_eq!(m.seq, expect_seq);
        decoded += n as usize;
        assert_eq!(decoded, total as usize);
        assert_eq!(e.sequence(), total);
        // A template-only message does not advance the sequence number.
        e.include_templates();
        assert_eq!(e.finish(2, &mut out).unwrap(), 0);
        assert_eq!(decode(&out, &mut tpl).seq, total);
        assert_eq!(e.sequence(), total);
    }

    #[test]
    fn size_limit_refused_below_templates_plus_a_record() {
        let min = min_message_len(true);
        assert!(Encoder::new(0, true, min - 1).is_err());
        assert!(Encoder::new(0, true, min).is_ok());
        assert!(Encoder::new(0, false, MAX_MESSAGE_LEN + 1).is_err());
        // At the minimum, templates plus the largest record fit exactly.
        let mut e = Encoder::new(0, true, min).unwrap();
        e.include_templates();
        assert!(e.push(&NatEvent::at(1, EventKind::SessionCreate(session(1)))));
        let mut out = vec![];
        e.finish(0, &mut out).unwrap();
        assert_eq!(out.len(), min);
    }
}
