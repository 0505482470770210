//! rtnetlink requests: dumps of routes, neighbours, nexthop objects and link MTUs into a
//! [`Snapshot`](super::Snapshot), and neighbour resolution requests.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_packet_utils::nla::Nla;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::{Hop, Route, RouteKind, Snapshot};

fn send(sock: &Socket, msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<()> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    let mut req = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf[..]);
    sock.send(&buf[..], 0)?;
    Ok(())
}

fn open() -> std::io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    Ok(sock)
}

/// Sends a request and collects every message of the reply until DONE/ACK.
fn transact(msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<Vec<RouteNetlinkMessage>> {
    let sock = open()?;
    send(&sock, msg, flags)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        let mut off = 0;
        while off < n {
            let Some(bytes) = buf.get(off..n) else { break };
            let msg: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(out), // ACK
                        Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
                    };
                }
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
        if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
            return Ok(out);
        }
    }
}

/// The MTU of interface `ifindex`, from sysfs.
pub(super) fn link_mtu(ifindex: u32) -> Option<u32> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    let path = format!("/sys/class/net/{}/mtu", name.to_string_lossy());
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Dumps routes and neighbours, and reads the MTUs of the interfaces in `watch`.
pub(super) fn dump_snapshot(watch: &[u32]) -> std::io::Result<Snapshot> {
    let mut rmsg = RouteMessage::default();
    rmsg.header.address_family = AddressFamily::Inet;
    let mut routes = Vec::new();
    // The nexthop objects, dumped once the first route naming one needs them.
    let mut nh_objects: Option<HashMap<u32, NhObject>> = None;
    for m in transact(
        RouteNetlinkMessage::GetRoute(rmsg),
        NLM_F_DUMP | NLM_F_REQUEST,
    )? {
        let RouteNetlinkMessage::NewRoute(r) = m else {
            continue;
        };
        if r.header.address_family != AddressFamily::Inet {
            continue;
        }
        let kind = match r.header.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::BlackHole => RouteKind::Blackhole,
            RouteType::Unreachable => RouteKind::Unreachable,
            RouteType::Prohibit => RouteKind::Prohibit,
            _ => continue,
        };
        let mut table = u32::from(r.header.table);
        let (mut dst, mut gw, mut oif) = (0u32, None, 0u32);
        let mut multipath = Vec::new();
        let mut nh_id = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::Other(nla) if nla.kind() == RTA_NH_ID && nla.value_len() == 4 => {
                    let mut v = [0u8; 4];
                    nla.emit_value(&mut v);
                    nh_id = Some(u32::from_ne_bytes(v));
                }
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = u32::from(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(u32::from(*ip)),
                RouteAttribute::Oif(i) => oif = *i,
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::MultiPath(hops) => {
                    for h in hops {
                        let gateway = h.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(u32::from(*ip)),
                            _ => None,
                        });
                        multipath.push(Hop {
                            gateway,
                            oif: h.interface_index,
                            // The kernel stores weight - 1.
                            weight: u16::from(h.hops) + 1,
                        });
                    }
                }
                _ => {}
            }
        }
        if table != 254 {
            continue; // main table only
        }
        let mut route = Route {
            prefix: dst,
            len: r.header.destination_prefix_length,
            gateway: gw,
            oif,
            kind,
            multipath,
        };
        // A route through a nexthop object (`ip route ... nhid N`, as FRR installs them)
        // carries only the id unless the kernel's nexthop_compat_mode also spells out
        // its next hops: then they come from the nexthop objects.
        if let (Some(id), RouteKind::Unicast, 0, true) =
            (nh_id, kind, oif, route.multipath.is_empty())
        {
            if nh_objects.is_none() {
                nh_objects = Some(dump_nexthops().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "nexthop object dump failed");
                    HashMap::new()
                }));
            }
            if let Some(objs) = &nh_objects {
                resolve_nexthop(&mut route, id, objs);
            }
        }
        if let Some(first) = route.multipath.first() {
            route.gateway = first.gateway;
            route.oif = first.oif;
        }
        if route.kind == RouteKind::Unicast && route.oif == 0 {
            continue; // forwards nothing (or a nexthop object not found)
        }
        routes.push(route);
    }
    let mut nmsg = NeighbourMessage::default();
    nmsg.header.family = AddressFamily::Inet;
    let mut neigh = HashMap::new();
    for m in transact(
        RouteNetlinkMessage::GetNeighbour(nmsg),
        NLM_F_DUMP | NLM_F_REQUEST,
    )? {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        if matches!(
            n.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        ) {
            continue;
        }
        let (mut ip, mut mac) = (None, None);
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    ip = Some(u32::from(*a))
                }
                NeighbourAttribute::LinkLocalAddress(l) if l.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(l);
                    mac = Some(m);
                }
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (ip, mac) {
            neigh.insert((n.header.ifindex, ip), mac);
        }
    }
    let mtus = watch.iter().filter_map(|&i| link_mtu(i).map(|m| (i, m)));
    Ok(Snapshot::new(routes, neigh).with_mtus(mtus))
}

/// RTA_NH_ID: the nexthop object a route uses (linux/rtnetlink.h).
const RTA_NH_ID: u16 = 30;

/// A nexthop object (`ip nexthop add id N ...`), as RTM_GETNEXTHOP describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct NhObject {
    /// Gateway, or `None` for a directly connected next hop.
    pub(super) gateway: Option<u32>,
    /// Output interface index (0 in a group).
    pub(super) oif: u32,
    /// `blackhole`.
    pub(super) blackhole: bool,
    /// Members of a group: (id, weight).
    pub(super) group: Vec<(u32, u16)>,
}

/// Gives `route` the next hops of nexthop object `id`: a single next hop, a group (as a
/// multipath route, by weight) or a blackhole. An object not found, or a group whose
/// members are missing, leaves the route without an interface.
pub(super) fn resolve_nexthop(route: &mut Route, id: u32, objs: &HashMap<u32, NhObject>) {
    let Some(o) = objs.get(&id) else { return };
    if o.blackhole {
        route.kind = RouteKind::Blackhole;
        return;
    }
    if o.group.is_empty() {
        route.gateway = o.gateway;
        route.oif = o.oif;
        return;
    }
    // Members are single next hops (the kernel refuses nested groups).
    route.multipath = o
        .group
        .iter()
        .filter_map(|&(m, weight)| {
            let n = objs.get(&m)?;
            (n.oif != 0 && !n.blackhole).then_some(Hop {
                gateway: n.gateway,
                oif: n.oif,
                weight,
            })
        })
        .collect();
}

/// Dumps the IPv4 nexthop objects and the groups (RTM_GETNEXTHOP; netlink-packet-route has no type for
/// them, so the request and the reply are read here): id -> object.
pub(super) fn dump_nexthops() -> std::io::Result<HashMap<u32, NhObject>> {
    const RTM_NEWNEXTHOP: u16 = 104;
    const RTM_GETNEXTHOP: u16 = 106;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    let sock = open()?;
    // nlmsghdr (16 bytes) + struct nhmsg { family, scope, protocol, resvd, flags: u32 }.
    let mut req = Vec::with_capacity(24);
    req.extend_from_slice(&24u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETNEXTHOP.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port
                                                // Family AF_UNSPEC: groups have no family of their own (AF_INET would leave them out).
    req.extend_from_slice(&[0u8; 8]);
    sock.send(&req, 0)?;
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        let mut rest = buf.get(..n).unwrap_or_default();
        while let Some((kind, body, next)) = nlmsg(rest) {
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = body
                        .get(..4)
                        .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                    return if code == 0 {
                        Ok(out)
                    } else {
                        Err(std::io::Error::from_raw_os_error(-code))
                    };
                }
                RTM_NEWNEXTHOP => {
                    if let Some((id, o)) = parse_nhmsg(body) {
                        out.insert(id, o);
                    }
                }
                _ => {}
            }
            rest = next;
        }
        if n == 0 {
            return Ok(out);
        }
    }
}

/// Splits the first netlink message off `buf`: (type, payload, the rest); `None` at the end
/// or on a malformed header.
pub(super) fn nlmsg(buf: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let h = buf.get(..16)?;
    let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let kind = u16::from_ne_bytes([h[4], h[5]]);
    let body = buf.get(16..len)?;
    let next = buf.get(len.saturating_add(3) & !3..).unwrap_or_default();
    Some((kind, body, next))
}

/// Reads one RTM_NEWNEXTHOP payload (struct nhmsg, then NHA_* attributes, linux/nexthop.h).
pub(super) fn parse_nhmsg(body: &[u8]) -> Option<(u32, NhObject)> {
    const NHA_ID: u16 = 1;
    const NHA_GROUP: u16 = 2;
    const NHA_BLACKHOLE: u16 = 4;
    const NHA_OIF: u16 = 5;
    const NHA_GATEWAY: u16 = 6;
    let family = *body.first()?;
    if family != libc::AF_INET as u8 && family != 0 {
        return None;
    }
    let u32_of = |v: &[u8]| {
        v.get(..4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut id = None;
    let mut o = NhObject::default();
    let mut attrs = body.get(8..)?;
    while let Some(h) = attrs.get(..4) {
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let kind = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff; // without NLA_F_NESTED/NET_BYTEORDER
        let v = attrs.get(4..len)?;
        match kind {
            NHA_ID => id = u32_of(v),
            NHA_OIF => o.oif = u32_of(v)?,
            // An IPv4 gateway only (IPv6 next hops of IPv4 routes are not followed).
            NHA_GATEWAY if v.len() == 4 => {
                o.gateway = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
            }
            NHA_GATEWAY => return None,
            NHA_BLACKHOLE => o.blackhole = true,
            // struct nexthop_grp { u32 id; u8 weight (the weight - 1); u8; u16 }.
            NHA_GROUP => {
                o.group = v
                    .chunks_exact(8)
                    .filter_map(|g| Some((u32_of(g)?, u16::from(g[4]) + 1)))
                    .collect();
            }
            _ => {}
        }
        attrs = attrs.get(len.saturating_add(3) & !3..).unwrap_or_default();
        if len < 4 {
            break;
        }
    }
    Some((id?, o))
}

/// Asks the kernel to resolve `nh` on `oif` (like `ip neigh replace NH dev DEV use`).
pub(super) fn request_resolution(nh: u32, oif: u32) -> std::io::Result<()> {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = oif;
    m.header.state = NeighbourState::None;
    m.header.flags = NeighbourFlags::Use;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            Ipv4Addr::from(nh),
        )));
    transact(
        RouteNetlinkMessage::NewNeighbour(m),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map(|_| ())
}
