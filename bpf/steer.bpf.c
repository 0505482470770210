// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xnat steering program.
 *
 * Runs on every queue of the inside and outside interfaces. It decides, with
 * as little work as possible, whether a frame belongs to the xnat workers
 * (redirect into the AF_XDP socket bound to this queue) or to the kernel
 * (XDP_PASS). It never modifies a frame and never drops one.
 *
 * Rules, in order:
 * Each interface owns XNAT_MAX_QUEUES consecutive XSKMAP slots from its xsk_base.
 *
 *   1. non-IPv4 (ARP, IPv6, VLAN-tagged, ...)            -> PASS
 *   2. frame too short for an IPv4 header                  -> PASS (kernel drops it)
 *   3. the interface has no role                           -> PASS
 *   4. destination is a NAT address (SNAT pool or DNAT):
 *        TCP/UDP whose destination port is inside the address's port range,
 *        or matches a port-forward rule; ICMP echo replies whose identifier
 *        is inside the range; ICMP errors                    -> REDIRECT
 *        otherwise (echo requests, the gateway's own services) -> PASS
 *   5. destination is one of the gateway's own addresses   -> PASS
 *   6. inside role, or outside role with route_all set     -> REDIRECT
 *   7. otherwise                                           -> PASS
 * A redirect whose queue has no socket falls back to PASS and is counted.
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

static __always_inline int pass(void)
{
	count(XNAT_CNT_PASSED);
	return XDP_PASS;
}

static __always_inline int redirect(struct xdp_md *ctx, const struct xnat_if_cfg *ifc)
{
	__u32 q = ctx->rx_queue_index;

	if (q >= XNAT_MAX_QUEUES) {
		count(XNAT_CNT_REDIRECT_FAILED);
		return XDP_PASS;
	}
	q += ifc->xsk_base;

	if (!bpf_map_lookup_elem(&xsks, &q)) {
		count(XNAT_CNT_REDIRECT_FAILED);
		return XDP_PASS;
	}
	count(XNAT_CNT_REDIRECTED);
	return bpf_redirect_map(&xsks, q, XDP_PASS);
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

	if ((void *)(eth + 1) > data_end)
		return pass();
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return pass();
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return pass();

	ifc = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!ifc)
		return pass();

	daddr = ip->daddr;
	nat = bpf_map_lookup_elem(&nat_addrs, &daddr);
	if (nat) {
		__u16 dport;
		__u8 *l4;

		if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP &&
		    ip->protocol != IPPROTO_ICMP)
			return pass();
		/* Fragments without a port header go to userspace, which counts them. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return redirect(ctx, ifc);
		l4 = (__u8 *)ip + ((__u32)(ip->ihl & 0xf) << 2);
		if ((void *)(l4 + 8) > data_end)
			return redirect(ctx, ifc);
		if (ip->protocol == IPPROTO_ICMP) {
			/* Echo requests are for the gateway's own kernel; echo replies belong
			 * to xnat when their identifier is in the NAT range; errors (3, 11, 12)
			 * may quote a translated packet. */
			if (l4[0] == 0) {
				dport = ((__u16)l4[4] << 8) | l4[5];
				if (dport >= nat->port_lo && dport <= nat->port_hi)
					return redirect(ctx, ifc);
				return pass();
			}
			if (l4[0] == 3 || l4[0] == 11 || l4[0] == 12)
				return redirect(ctx, ifc);
			return pass();
		}
		dport = ((__u16)l4[2] << 8) | l4[3];
		if (dport >= nat->port_lo && dport <= nat->port_hi)
			return redirect(ctx, ifc);
		struct xnat_fwd_key k = { .addr = daddr, .port = dport, .proto = ip->protocol };
		if (bpf_map_lookup_elem(&fwd_rules, &k))
			return redirect(ctx, ifc);
		return pass();
	}

	if (bpf_map_lookup_elem(&local_addrs, &daddr))
		return pass();

	if (ifc->role == XNAT_ROLE_INSIDE || ifc->route_all)
		return redirect(ctx, ifc);
	return pass();
}
