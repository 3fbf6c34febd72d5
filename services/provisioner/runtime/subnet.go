package runtime

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
)

// EngineSubnets is the [DockerConfig.SubnetPool] value that leaves subnets to the engine's
// default address pools. Those hold about 30 bridge networks on a stock engine, which caps a
// host at about 30 tenants, since each tenant has its own network.
const EngineSubnets = "engine"

// maxSubnetTries bounds the search for a free subnet; each try is one refused create call.
const maxSubnetTries = 256

// subnetPool hands out fixed-size IPv4 subnets of one prefix to tenant networks. The engine is
// the arbiter of what is free: a subnet is taken when the engine refuses it as overlapping.
type subnetPool struct {
	pool netip.Prefix
	bits int
}

// parseSubnetPool reads DockerConfig.SubnetPool and SubnetBits; ok is false for EngineSubnets.
func parseSubnetPool(pool string, bits int) (p subnetPool, ok bool, err error) {
	if pool == EngineSubnets {
		return subnetPool{}, false, nil
	}
	prefix, err := netip.ParsePrefix(pool)
	if err != nil || !prefix.Addr().Is4() || prefix != prefix.Masked() {
		return subnetPool{}, false, fmt.Errorf("subnet pool %q must be an IPv4 network such as 10.213.0.0/16, or %q", pool, EngineSubnets)
	}
	if bits < prefix.Bits() || bits > 29 {
		return subnetPool{}, false, fmt.Errorf("subnet bits %d must be between the pool's %d and 29", bits, prefix.Bits())
	}
	return subnetPool{pool: prefix, bits: bits}, true, nil
}

// slots is how many tenant subnets the pool holds.
func (p subnetPool) slots() int { return 1 << (p.bits - p.pool.Bits()) }

// subnet returns the n-th tenant subnet of the pool.
func (p subnetPool) subnet(n int) netip.Prefix {
	base := p.pool.Addr().As4()
	addr := binary.BigEndian.Uint32(base[:]) + uint32(n%p.slots())<<(32-p.bits)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], addr)
	return netip.PrefixFrom(netip.AddrFrom4(b), p.bits)
}

// candidates returns the subnets to try for a network, starting at a slot derived from its
// name so that tenants (and parallel installations with other name prefixes) spread over the
// pool instead of all contending for its first subnet.
func (p subnetPool) candidates(name string) []netip.Prefix {
	h := fnv.New32a()
	_, _ = h.Write([]byte(name))
	start := int(h.Sum32() % uint32(p.slots()))
	n := min(p.slots(), maxSubnetTries)
	out := make([]netip.Prefix, 0, n)
	for i := range n {
		out = append(out, p.subnet(start+i))
	}
	return out
}

// isSubnetTaken reports whether the engine refused a network because its subnet overlaps one
// in use. The engine says so only in text.
func isSubnetTaken(err error) bool {
	return err != nil && strings.Contains(err.Error(), "overlaps")
}

// isPoolExhausted reports whether the engine has no default-pool subnet left.
func isPoolExhausted(err error) bool {
	return err != nil && strings.Contains(err.Error(), "non-overlapping")
}
