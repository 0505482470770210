/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map layouts shared by bpf/steer.bpf.c and src/dataplane/bpf.rs. */
#ifndef XNAT_STEER_H
#define XNAT_STEER_H

#define XNAT_MAX_QUEUES 128 /* per interface */
#define XNAT_XSK_SLOTS (2 * XNAT_MAX_QUEUES)

#define XNAT_ROLE_INSIDE 1
#define XNAT_ROLE_OUTSIDE 2

enum xnat_counter {
	XNAT_CNT_REDIRECTED = 0,
	XNAT_CNT_PASSED = 1,
	XNAT_CNT_REDIRECT_FAILED = 2,
	XNAT_CNT_MAX = 3,
};

struct xnat_if_cfg {
	__u32 xsk_base; /* XSKMAP slot of queue 0 of this interface */
	__u8 role;      /* XNAT_ROLE_* */
	__u8 route_all; /* redirect every IPv4 frame not for a local address */
	__u8 pad[2];
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

#endif
