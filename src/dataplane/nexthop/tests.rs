use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::netlink::{nlmsg, parse_nhmsg, resolve_nexthop, NhObject};
use super::resolver::has_address_message;
use super::view::{mac_slot, route_slot, SCAN_ROUTES};
use super::*;

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

/// A netlink attribute: length, type, value, padded to 4 bytes.
fn nla(kind: u16, v: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(v);
    a.resize((a.len() + 3) & !3, 0);
    a
}

/// An RTM_NEWNEXTHOP payload: struct nhmsg of `family`, then `attrs`.
fn nhmsg(family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut m = vec![family, 0, 0, 0, 0, 0, 0, 0];
    for a in attrs {
        m.extend_from_slice(a);
    }
    m
}

#[test]
fn nexthop_objects_are_read_and_give_routes_their_next_hops() {
    let inet = libc::AF_INET as u8;
    let single = |id: u32, gw: &str, oif: u32| {
        nhmsg(
            inet,
            &[
                nla(1, &id.to_ne_bytes()),
                nla(5, &oif.to_ne_bytes()),
                nla(6, &gw.parse::<Ipv4Addr>().unwrap().octets()),
            ],
        )
    };
    let (id, ten) = parse_nhmsg(&single(10, "198.19.0.2", 3)).unwrap();
    assert_eq!(id, 10);
    assert_eq!((ten.gateway, ten.oif), (Some(ip("198.19.0.2")), 3));
    let (_, eleven) = parse_nhmsg(&single(11, "198.19.0.3", 3)).unwrap();
    // A group (no family of its own): members with weight - 1 on the wire.
    let mut grp = Vec::new();
    for (m, w) in [(10u32, 2u8), (11, 0)] {
        grp.extend_from_slice(&m.to_ne_bytes());
        grp.extend_from_slice(&[w, 0, 0, 0]);
    }
    let (_, group) = parse_nhmsg(&nhmsg(0, &[nla(1, &20u32.to_ne_bytes()), nla(2, &grp)])).unwrap();
    assert_eq!(group.group, vec![(10, 3), (11, 1)]);
    let (_, hole) =
        parse_nhmsg(&nhmsg(inet, &[nla(1, &30u32.to_ne_bytes()), nla(4, &[])])).unwrap();
    assert!(hole.blackhole);
    // An IPv6 object is not ours; a truncated attribute or a missing id is refused.
    assert!(parse_nhmsg(&nhmsg(10, &[nla(1, &40u32.to_ne_bytes())])).is_none());
    let cut = single(12, "198.19.0.4", 3);
    assert!(parse_nhmsg(&cut[..cut.len() - 2]).is_none());
    assert!(parse_nhmsg(&nhmsg(inet, &[nla(5, &3u32.to_ne_bytes())])).is_none());
    assert!(parse_nhmsg(&[]).is_none());

    let objs: HashMap<u32, NhObject> = [(10, ten), (11, eleven), (20, group), (30, hole)].into();
    let mut r = Route::via(ip("198.19.9.0"), 24, None, 0);
    resolve_nexthop(&mut r, 20, &objs);
    assert_eq!(
        r.multipath,
        vec![
            Hop {
                gateway: Some(ip("198.19.0.2")),
                oif: 3,
                weight: 3
            },
            Hop {
                gateway: Some(ip("198.19.0.3")),
                oif: 3,
                weight: 1
            },
        ]
    );
    let mut r = Route::via(ip("198.19.8.0"), 24, None, 0);
    resolve_nexthop(&mut r, 11, &objs);
    assert_eq!((r.gateway, r.oif), (Some(ip("198.19.0.3")), 3));
    resolve_nexthop(&mut r, 30, &objs);
    assert_eq!(r.kind, RouteKind::Blackhole);
    let mut r = Route::via(ip("198.19.7.0"), 24, None, 0);
    resolve_nexthop(&mut r, 99, &objs);
    assert_eq!(r.oif, 0, "an unknown object leaves the route unusable");

    // Netlink framing: a message split off its datagram, a short one refused.
    let mut dgram = Vec::new();
    let body = single(10, "198.19.0.2", 3);
    dgram.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    dgram.extend_from_slice(&104u16.to_ne_bytes());
    dgram.extend_from_slice(&[0; 10]);
    dgram.extend_from_slice(&body);
    let (kind, b, rest) = nlmsg(&dgram).unwrap();
    assert_eq!((kind, b, rest.len()), (104, &body[..], 0));
    assert!(nlmsg(&dgram[..20]).is_none());
}

#[test]
fn address_notifications_are_told_from_the_others() {
    // A netlink header: length, type, flags, sequence, port; then `body` bytes.
    let msg = |kind: u16, body: usize| {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.resize(16 + body, 0);
        m.resize((16 + body + 3) & !3, 0);
        m
    };
    const NEWROUTE: u16 = 24;
    const NEWNEIGH: u16 = 28;
    assert!(!has_address_message(&msg(NEWROUTE, 40)));
    assert!(has_address_message(&msg(20, 40)), "RTM_NEWADDR");
    assert!(has_address_message(&msg(21, 41)), "RTM_DELADDR");
    // Second in a datagram, after an unaligned message.
    let mut two = msg(NEWNEIGH, 37);
    two.extend(msg(21, 8));
    assert!(has_address_message(&two));
    // Truncated or malformed: no panic, no match beyond.
    assert!(!has_address_message(&two[..10]));
    let mut bad = msg(NEWROUTE, 4);
    bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
    bad.extend(msg(20, 4));
    assert!(!has_address_message(&bad));
    assert!(!has_address_message(&[]));
}

#[test]
fn fib_is_a_longest_prefix_match_over_every_interface_and_type() {
    let hop = |gw: &str, oif, weight| Hop {
        gateway: Some(ip(gw)),
        oif,
        weight,
    };
    let kind = |prefix: &str, len, kind| Route {
        kind,
        ..Route::via(ip(prefix), len, None, 0)
    };
    let s = Snapshot::new(
        vec![
            Route::via(ip("0.0.0.0"), 0, Some(ip("198.19.0.2")), 2),
            Route::via(ip("198.18.0.0"), 24, None, 1),
            Route::via(ip("198.18.7.0"), 24, Some(ip("198.18.0.9")), 1),
            kind("198.19.5.0", 24, RouteKind::Blackhole),
            kind("198.19.6.0", 24, RouteKind::Unreachable),
            kind("198.19.7.0", 24, RouteKind::Prohibit),
            Route {
                multipath: vec![hop("198.19.0.2", 2, 1), hop("198.19.0.3", 2, 3)],
                ..Route::via(ip("198.19.9.0"), 24, Some(ip("198.19.0.2")), 2)
            },
        ],
        HashMap::new(),
    );
    let via = |oif, nh: &str| Fib::Via { oif, nh: ip(nh) };
    assert_eq!(s.fib(ip("8.8.8.8"), 0), via(2, "198.19.0.2"));
    assert_eq!(s.fib(ip("198.18.0.5"), 0), via(1, "198.18.0.5"));
    assert_eq!(s.fib(ip("198.18.7.5"), 0), via(1, "198.18.0.9"));
    assert_eq!(s.fib(ip("198.19.5.1"), 0), Fib::Blackhole);
    assert_eq!(s.fib(ip("198.19.6.1"), 0), Fib::Unreachable);
    assert_eq!(s.fib(ip("198.19.7.1"), 0), Fib::Prohibit);
    assert_eq!(Snapshot::default().fib(1, 0), Fib::NoRoute);
    // ECMP: the flow hash picks by weight (1:3), the same flow always the same hop.
    let mut n = [0u32; 2];
    for h in 0..4000u32 {
        let f = s.fib(ip("198.19.9.1"), h.wrapping_mul(0x9E37_79B1));
        assert_eq!(f, s.fib(ip("198.19.9.1"), h.wrapping_mul(0x9E37_79B1)));
        match f {
            Fib::Via { nh, .. } if nh == ip("198.19.0.2") => n[0] += 1,
            Fib::Via { nh, .. } if nh == ip("198.19.0.3") => n[1] += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(n[0] > 800 && n[0] < 1200 && n[1] > 2800, "{n:?}");
    // next_hop (restricted to an interface) passes over the blackhole: the default route.
    assert_eq!(s.next_hop(ip("198.19.5.1"), 2), Some(ip("198.19.0.2")));
}

/// The next address after `a` that takes the same cache entry as `a` (`slot`).
fn sharing_slot(a: u32, slot: fn(u32) -> usize) -> u32 {
    (1u32..)
        .map(|k| a.wrapping_add(k))
        .find(|&b| slot(b) == slot(a))
        .expect("an address sharing the entry")
}

#[test]
fn a_view_caches_routes_per_destination_until_the_next_snapshot() {
    // More routes than a view scans without its cache: /32 blackholes elsewhere.
    let pad = |mut v: Vec<Route>| {
        v.extend((0..SCAN_ROUTES as u32).map(|k| Route {
            kind: RouteKind::Blackhole,
            ..Route::via(ip("198.18.200.0") + k, 32, None, 0)
        }));
        v
    };
    let nh = NextHops::new();
    nh.publish(Snapshot::new(
        pad(vec![Route::via(0, 0, Some(ip("198.19.0.2")), 2)]),
        HashMap::new(),
    ));
    let mut v = nh.view();
    let via = |oif, nh: &str| Fib::Via { oif, nh: ip(nh) };
    for _ in 0..3 {
        assert_eq!(v.fib(ip("198.19.9.1"), 0), via(2, "198.19.0.2"));
    }
    // Two destinations sharing a cache entry: each gets its own answer.
    let a = ip("198.19.9.1");
    let b = sharing_slot(a, route_slot);
    assert_eq!(v.fib(b, 0), via(2, "198.19.0.2"));
    // A new snapshot (a more specific route): the cache does not hide it.
    nh.publish(Snapshot::new(
        pad(vec![
            Route::via(0, 0, Some(ip("198.19.0.2")), 2),
            Route {
                kind: RouteKind::Blackhole,
                ..Route::via(ip("198.19.9.0"), 24, None, 0)
            },
        ]),
        HashMap::new(),
    ));
    assert!(v.refresh());
    assert_eq!(v.fib(a, 0), Fib::Blackhole);
    assert_eq!(v.fib(ip("198.18.7.7"), 0), via(2, "198.19.0.2"));
    assert_eq!(
        v.fib(ip("198.18.200.3"), 0),
        Fib::Blackhole,
        "a padding route"
    );
    nh.publish(Snapshot::new(pad(vec![]), HashMap::new()));
    assert!(v.refresh());
    assert_eq!(v.fib(a, 0), Fib::NoRoute);
    assert_eq!(v.fib(a, 0), Fib::NoRoute, "a cached 'no route'");
}

#[test]
fn a_view_caches_macs_per_next_hop_until_the_next_snapshot() {
    let gw = ip("198.19.0.2");
    // Another next hop that shares the gateway's cache entry.
    let other = sharing_slot(gw, mac_slot);
    let nh = NextHops::fixed(Snapshot::new(
        vec![Route::via(0, 0, Some(gw), 2)],
        HashMap::from([
            ((2, gw), [2, 0, 0, 0, 0, 1]),
            ((2, other), [2, 0, 0, 0, 0, 7]),
        ]),
    ));
    let mut v = nh.view();
    for _ in 0..3 {
        assert_eq!(v.mac_of(gw, 2), Ok([2, 0, 0, 0, 0, 1]));
        assert_eq!(v.mac_of(other, 2), Ok([2, 0, 0, 0, 0, 7]));
    }
    // The same next hop on another interface is another neighbour: not resolved.
    assert_eq!(v.mac_of(gw, 1), Err(Miss::Unresolved(gw)));
    // The gateway's MAC changes: the next snapshot's, not the cached one.
    nh.publish(Snapshot::new(
        vec![Route::via(0, 0, Some(gw), 2)],
        HashMap::from([((2, gw), [2, 0, 0, 0, 0, 9])]),
    ));
    assert!(v.refresh());
    assert_eq!(v.mac_of(gw, 2), Ok([2, 0, 0, 0, 0, 9]));
    assert_eq!(v.mac_of(other, 2), Err(Miss::Unresolved(other)));
}

#[test]
fn a_view_scans_few_routes_and_caches_many_with_the_same_answers() {
    // The same routes alone (scanned for every packet) and padded past SCAN_ROUTES with
    // routes no destination below matches (looked up through the view's cache).
    let routes = vec![
        Route::via(0, 0, Some(ip("198.19.0.2")), 2),
        Route::via(ip("198.18.0.0"), 16, None, 1),
        Route::via(ip("198.18.7.0"), 24, Some(ip("198.18.0.9")), 1),
        Route {
            kind: RouteKind::Unreachable,
            ..Route::via(ip("198.19.6.0"), 24, None, 0)
        },
    ];
    let mut padded = routes.clone();
    padded.extend((0..SCAN_ROUTES as u32).map(|k| Route {
        kind: RouteKind::Prohibit,
        ..Route::via(ip("198.19.200.0") + k, 32, None, 0)
    }));
    let (few, many) = (NextHops::new(), NextHops::new());
    few.publish(Snapshot::new(routes, HashMap::new()));
    many.publish(Snapshot::new(padded, HashMap::new()));
    let (vf, vm) = (few.view(), many.view());
    for round in 0..2 {
        for d in (0..4096u32)
            .map(|k| ip("198.18.0.0").wrapping_add(k.wrapping_mul(0x0001_2F3B) % (1 << 17)))
        {
            assert_eq!(
                vf.fib(d, d),
                vm.fib(d, d),
                "{} (round {round})",
                Ipv4Addr::from(d)
            );
        }
    }
    assert_eq!(
        vf.fib(ip("198.18.7.5"), 0),
        Fib::Via {
            oif: 1,
            nh: ip("198.18.0.9")
        }
    );
    assert_eq!(
        vf.fib(ip("198.18.3.5"), 0),
        Fib::Via {
            oif: 1,
            nh: ip("198.18.3.5")
        }
    );
    assert_eq!(vf.fib(ip("198.19.6.1"), 0), Fib::Unreachable);
}

#[test]
fn longest_prefix_wins_and_oif_is_respected() {
    let routes = vec![
        Route::via(0, 0, Some(ip("198.19.0.254")), 3),
        Route {
            prefix: ip("198.19.0.0"),
            len: 24,
            gateway: None,
            oif: 3,
            kind: RouteKind::Unicast,
            multipath: Vec::new(),
        },
        Route {
            prefix: ip("198.18.0.0"),
            len: 24,
            gateway: None,
            oif: 2,
            kind: RouteKind::Unicast,
            multipath: Vec::new(),
        },
    ];
    let mut n = HashMap::new();
    n.insert((3, ip("198.19.0.2")), [2, 0, 0, 0, 0, 2]);
    let s = Snapshot::new(routes, n);
    assert_eq!(s.next_hop(ip("198.19.0.2"), 3), Some(ip("198.19.0.2")));
    assert_eq!(s.next_hop(ip("198.51.100.1"), 3), Some(ip("198.19.0.254")));
    assert_eq!(s.next_hop(ip("198.18.0.7"), 2), Some(ip("198.18.0.7")));
    assert_eq!(s.next_hop(ip("198.51.100.1"), 2), None);
    assert_eq!(s.resolve(ip("198.19.0.2"), 3), Ok([2, 0, 0, 0, 0, 2]));
    assert_eq!(
        s.resolve(ip("198.51.100.1"), 3),
        Err(Miss::Unresolved(ip("198.19.0.254")))
    );
    assert_eq!(s.resolve(ip("198.51.100.1"), 2), Err(Miss::NoRoute));
}
