// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xnat steering program.
 *
 * Runs on every queue of the inside and outside interfaces. It decides, with
 * as little work as possible, whether a frame belongs to the xnat workers
 * (redirect into the AF_XDP socket bound to this queue) or to the kernel
 * (XDP_PASS). It never modifies a frame and never drops one. Every pass is
 * counted by reason (XNAT_CNT_PASS_*).
 *
 * Rules, in order:
 * Each interface owns XNAT_MAX_QUEUES consecutive XSKMAP slots from its xsk_base.
 *
 *   1. frame too short for Ethernet                          -> PASS (short)
 *   2. the interface has no role                             -> PASS (no_role)
 *   3. broadcast or multicast destination MAC                -> PASS (l2_group)
 *   4. unicast to a MAC other than the interface's           -> PASS (not_our_mac)
 *   5. non-IPv4 (ARP, IPv6, VLAN-tagged, ...)                -> PASS (not_ipv4)
 *   6. too short for an IPv4 header                          -> PASS (short)
 *   7. multicast (224/4) or limited broadcast destination    -> PASS (ip_group)
 *   8. destination is a NAT address (SNAT pool or DNAT):
 *        TCP/UDP to a port inside the address's range or a port-forward rule;
 *        ICMP query replies (echo, timestamp, information, address mask) whose
 *        identifier is in the range; ICMP errors quoting a packet sent from a
 *        port (or with an identifier) in the range; a fragment
 *        other than the first, unless its first went to the host  -> REDIRECT
 *        otherwise: the host's own traffic on that address (its sockets' ports,
 *        query requests to it, errors about its own connections, the fragments of
 *        its datagrams)                                       -> PASS (host)
 *   9. destination is one of the gateway's own addresses     -> PASS (local)
 *  10. inside role, or outside role with route_all set       -> REDIRECT
 *  11. otherwise                                             -> PASS (not_steered)
 * A redirect whose queue has no socket is dropped and counted (redirect_failed): traffic
 * meant for the workers never reaches the kernel, whose forwarding would send it out
 * untranslated.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "steer.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XNAT_XSK_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* ifindex -> role (XNAT_ROLE_*) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct xnat_if_cfg);
} ifaces SEC(".maps");

/* IPv4 address (network order) -> NAT port range owned by xnat. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct xnat_addr_cfg);
} nat_addrs SEC(".maps");

/* Port-forward rules: {address, port, proto} -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct xnat_fwd_key);
	__type(value, __u8);
} fwd_rules SEC(".maps");

/* The gateway's own addresses (network order) -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} local_addrs SEC(".maps");

/* Datagrams whose first fragment went to the host (rule 8): where their later fragments
 * go too. LRU, so a flood cannot fill it for good. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct xnat_frag_key);
	__type(value, __u8);
} host_frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XNAT_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

static __always_inline int pass(__u32 reason)
{
	count(XNAT_CNT_PASSED);
	count(reason);
	return XDP_PASS;
}

static __always_inline int in_range(const struct xnat_addr_cfg *nat, __u16 port)
{
	return port >= nat->port_lo && port <= nat->port_hi;
}

static __always_inline __u16 rd16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

static __always_inline int redirect(struct xdp_md *ctx, const struct xnat_if_cfg *ifc)
{
	__u32 q = ctx->rx_queue_index;

	/* A frame for the workers never reaches the kernel untranslated: without a socket
	 * on its queue it is dropped (and counted). */
	if (q >= XNAT_MAX_QUEUES) {
		count(XNAT_CNT_REDIRECT_FAILED);
		return XDP_DROP;
	}
	q += ifc->xsk_base;

	if (!bpf_map_lookup_elem(&xsks, &q)) {
		count(XNAT_CNT_REDIRECT_FAILED);
		return XDP_DROP;
	}
	count(XNAT_CNT_REDIRECTED);
	return bpf_redirect_map(&xsks, q, XDP_DROP);
}

/* Rule 8: a frame to NAT address `daddr`. */
static __always_inline int nat_addr(struct xdp_md *ctx, const struct xnat_if_cfg *ifc,
				    const struct xnat_addr_cfg *nat, struct iphdr *ip,
				    void *data_end)
{
	__u8 *l4;
	__u16 frag = bpf_ntohs(ip->frag_off);

	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP &&
	    ip->protocol != IPPROTO_ICMP)
		return pass(XNAT_CNT_PASS_HOST);
	struct xnat_frag_key fk = {
		.saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id, .proto = ip->protocol,
	};
	/* A fragment other than the first carries no ports: it follows its first. */
	if (frag & 0x1fff) {
		if (bpf_map_lookup_elem(&host_frags, &fk))
			return pass(XNAT_CNT_PASS_HOST);
		return redirect(ctx, ifc);
	}
	l4 = (__u8 *)ip + ((__u32)(ip->ihl & 0xf) << 2);
	if ((void *)(l4 + 8) > data_end)
		return redirect(ctx, ifc); /* the workers count it as malformed */
	if (ip->protocol == IPPROTO_ICMP) {
		/* Query replies (echo 0, timestamp 14, information 16, address mask 18): the
		 * identifier is the port. */
		if (l4[0] == 0 || l4[0] == 14 || l4[0] == 16 || l4[0] == 18)
			return in_range(nat, rd16(l4 + 4)) ? redirect(ctx, ifc)
							   : pass(XNAT_CNT_PASS_HOST);
		if (l4[0] != 3 && l4[0] != 11 && l4[0] != 12)
			return pass(XNAT_CNT_PASS_HOST); /* query requests: the host answers */
		/* An error about a packet this address sent: whose port did it leave from? */
		struct iphdr *q = (struct iphdr *)(l4 + 8);
		__u8 *ql4;

		if ((void *)(q + 1) > data_end)
			return redirect(ctx, ifc);
		ql4 = (__u8 *)q + ((__u32)(q->ihl & 0xf) << 2);
		if ((void *)(ql4 + 8) > data_end)
			return redirect(ctx, ifc);
		if (q->protocol == IPPROTO_TCP || q->protocol == IPPROTO_UDP)
			return in_range(nat, rd16(ql4)) ? redirect(ctx, ifc)
							: pass(XNAT_CNT_PASS_HOST);
		if (q->protocol == IPPROTO_ICMP)
			return in_range(nat, rd16(ql4 + 4)) ? redirect(ctx, ifc)
							    : pass(XNAT_CNT_PASS_HOST);
		return pass(XNAT_CNT_PASS_HOST);
	}
	__u16 dport = rd16(l4 + 2);
	if (in_range(nat, dport))
		return redirect(ctx, ifc);
	struct xnat_fwd_key k = { .addr = ip->daddr, .port = dport, .proto = ip->protocol };
	if (bpf_map_lookup_elem(&fwd_rules, &k))
		return redirect(ctx, ifc);
	/* The host's own port: its later fragments go to the host too. */
	if (frag & 0x2000) {
		__u8 one = 1;
		bpf_map_update_elem(&host_frags, &fk, &one, BPF_ANY);
	}
	return pass(XNAT_CNT_PASS_HOST);
}

SEC("xdp")
int xnat_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct xnat_if_cfg *ifc;
	struct xnat_addr_cfg *nat;
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 daddr;
	int i;

	if ((void *)(eth + 1) > data_end)
		return pass(XNAT_CNT_PASS_SHORT);
	ifc = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!ifc)
		return pass(XNAT_CNT_PASS_NO_ROLE);
	if (eth->h_dest[0] & 1)
		return pass(XNAT_CNT_PASS_L2_GROUP);
	for (i = 0; i < 6; i++)
		if (eth->h_dest[i] != ifc->mac[i])
			return pass(XNAT_CNT_PASS_NOT_OUR_MAC);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return pass(XNAT_CNT_PASS_NOT_IPV4);
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return pass(XNAT_CNT_PASS_SHORT);

	daddr = ip->daddr;
	if ((bpf_ntohl(daddr) >> 28) == 0xe || daddr == 0xffffffff)
		return pass(XNAT_CNT_PASS_IP_GROUP);
	nat = bpf_map_lookup_elem(&nat_addrs, &daddr);
	if (nat)
		return nat_addr(ctx, ifc, nat, ip, data_end);
	if (bpf_map_lookup_elem(&local_addrs, &daddr))
		return pass(XNAT_CNT_PASS_LOCAL);
	if (ifc->role == XNAT_ROLE_INSIDE || ifc->route_all)
		return redirect(ctx, ifc);
	return pass(XNAT_CNT_PASS_NOT_STEERED);
}
