/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map layouts shared by bpf/steer.bpf.c and src/dataplane/bpf.rs. */
#ifndef XNAT_STEER_H
#define XNAT_STEER_H

#define XNAT_MAX_QUEUES 128 /* per interface */
#define XNAT_XSK_SLOTS (2 * XNAT_MAX_QUEUES)

#define XNAT_ROLE_INSIDE 1
#define XNAT_ROLE_OUTSIDE 2

/* Counter slots. The PASS_* reasons partition XNAT_CNT_PASSED (src/dataplane/bpf.rs names
 * them in the same order). */
enum xnat_counter {
	XNAT_CNT_REDIRECTED = 0,
	XNAT_CNT_PASSED = 1,
	XNAT_CNT_REDIRECT_FAILED = 2,
	XNAT_CNT_PASS_SHORT = 3,        /* shorter than Ethernet (+ IPv4) headers */
	XNAT_CNT_PASS_NO_ROLE = 4,      /* interface not served */
	XNAT_CNT_PASS_L2_GROUP = 5,     /* broadcast or multicast destination MAC */
	XNAT_CNT_PASS_NOT_OUR_MAC = 6,  /* unicast to another MAC (promiscuous) */
	XNAT_CNT_PASS_NOT_IPV4 = 7,     /* ARP, IPv6, VLAN-tagged, ... */
	XNAT_CNT_PASS_IP_GROUP = 8,     /* multicast or limited broadcast destination */
	XNAT_CNT_PASS_HOST = 9,         /* to a NAT address, but for the host's own sockets */
	XNAT_CNT_PASS_LOCAL = 10,       /* to one of the gateway's own addresses */
	XNAT_CNT_PASS_NOT_STEERED = 11, /* outside, not for NAT, no route_all */
	XNAT_CNT_MAX = 12,
};

struct xnat_if_cfg {
	__u32 xsk_base; /* XSKMAP slot of queue 0 of this interface */
	__u8 role;      /* XNAT_ROLE_* */
	__u8 route_all; /* redirect every IPv4 frame not for a local address */
	__u8 mac[6];    /* the interface's own MAC address */
};

struct xnat_addr_cfg {
	__u16 port_lo; /* host order, inclusive */
	__u16 port_hi; /* host order, inclusive */
};

struct xnat_fwd_key {
	__u32 addr;  /* network order */
	__u16 port;  /* host order */
	__u8 proto;
	__u8 pad;
};

/* A datagram whose first fragment went to the host: its later fragments follow it. */
struct xnat_frag_key {
	__u32 saddr; /* network order */
	__u32 daddr; /* network order */
	__u16 id;    /* network order */
	__u8 proto;
	__u8 pad;
};

#endif
