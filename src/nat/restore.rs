//! A connection that lost one of its halves (a process killed in the middle of writing
//! one, a `debug remove-half`): the packet that misses its half finds the other one through
//! its inside endpoint's mapping (endpoint-independent mapping) and has the table restore
//! the missing half at once. Without a mapping to go by, the surviving half restores it on
//! its first hit of a new refresh epoch (see the table's module docs).

use crate::config::Mapping;
use crate::table::{Dir, Hit, Tuple};

use super::{mapping_key, Engine};

impl Engine {
    /// The hit of `t` after restoring its missing half from the other one, if that is
    /// what made it miss.
    pub(super) fn repair_lost_half(&self, t: &Tuple, from_inside: bool) -> Option<Hit> {
        if self.rules.mapping != Mapping::EndpointIndependent || (t.proto != 6 && t.proto != 17) {
            return None;
        }
        let other = if from_inside {
            // The inside endpoint's NAT address and port: the reply half's key.
            let m = self
                .table
                .peek(&mapping_key(t.proto, t.src, t.sport), self.now)?;
            if m.dir != Dir::Org {
                return None;
            }
            Tuple {
                src: t.dst,
                sport: t.dport,
                dst: m.xlate.src,
                dport: m.xlate.sport,
                proto: t.proto,
            }
        } else {
            // The inside endpoint behind the NAT address and port: the original half's key.
            let wildcard = Tuple {
                src: 0,
                sport: 0,
                dst: t.dst,
                dport: t.dport,
                proto: t.proto,
            };
            let m = self.table.peek(&wildcard, self.now)?;
            if m.dir != Dir::Rev {
                return None;
            }
            Tuple {
                src: m.xlate.dst,
                sport: m.xlate.dport,
                dst: t.src,
                dport: t.sport,
                proto: t.proto,
            }
        };
        if !self.table.lookup_repair(&other, self.now)?.restored {
            return None;
        }
        self.table.lookup(t, self.now)
    }
}
