package egress_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/convergence-dev/convergence/services/provisioner/egress"
)

const apiPort = 3000

func policy() egress.Policy {
	return withReach(egress.New("convergence-test"))
}

func withReach(p egress.Policy) egress.Policy {
	p.APIPort = apiPort
	p.Resolvers = []netip.Addr{netip.MustParseAddr("192.168.1.53")}
	return p
}

func host(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("10.213.0.1"), port)
}

func out(addr string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), port)
}

// The policy is judged by evaluating its rules, the same data Apply compiles into the kernel:
// no traffic goes to the addresses named here.
func TestAllows_EachClassReachesWhatItShouldAndNothingElse(t *testing.T) {
	t.Parallel()
	p := policy()
	cases := []struct {
		name string
		pk   egress.Packet
		want bool
	}{
		{"platform: the API on the host", egress.Packet{Class: egress.Platform, Hook: egress.Input, Dst: host(apiPort), Proto: 6}, true},
		{"platform: another port of the host", egress.Packet{Class: egress.Platform, Hook: egress.Input, Dst: host(9464), Proto: 6}, false},
		{"platform: the API port over UDP", egress.Packet{Class: egress.Platform, Hook: egress.Input, Dst: host(apiPort), Proto: 17}, false},
		{"platform: the host's DNS", egress.Packet{Class: egress.Platform, Hook: egress.Input, Dst: host(53), Proto: 17}, false},
		{"platform: the internet", egress.Packet{Class: egress.Platform, Hook: egress.Forward, Dst: out("1.1.1.1", 443), Proto: 6}, false},
		{"platform: replies to the health check", egress.Packet{Class: egress.Platform, Hook: egress.Input, Replies: true, Dst: host(41000), Proto: 6}, true},
		{"none: the API", egress.Packet{Class: egress.None, Hook: egress.Input, Dst: host(apiPort), Proto: 6}, false},
		{"none: the internet", egress.Packet{Class: egress.None, Hook: egress.Forward, Dst: out("1.1.1.1", 443), Proto: 6}, false},
		{"none: replies to a request through a published port", egress.Packet{Class: egress.None, Hook: egress.Forward, Replies: true, Dst: out("203.0.113.9", 50000), Proto: 6}, true},
		{"internet: the API", egress.Packet{Class: egress.Internet, Hook: egress.Input, Dst: host(apiPort), Proto: 6}, true},
		{"internet: another port of the host", egress.Packet{Class: egress.Internet, Hook: egress.Input, Dst: host(5432), Proto: 6}, false},
		{"internet: a public address", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("1.1.1.1", 443), Proto: 6}, true},
		{"internet: a public IPv6 address", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("2606:4700::1111", 443), Proto: 6}, true},
		{"internet: the cloud metadata service", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("169.254.169.254", 80), Proto: 6}, false},
		{"internet: the metadata service over IPv6", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("fd00:ec2::254", 80), Proto: 6}, false},
		{"internet: 10/8", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("10.1.2.3", 5432), Proto: 6}, false},
		{"internet: 172.16/12 (other Docker networks)", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("172.18.0.2", 4222), Proto: 6}, false},
		{"internet: 192.168/16", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("192.168.1.1", 80), Proto: 6}, false},
		{"internet: carrier-grade NAT", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("100.100.100.200", 80), Proto: 6}, false},
		{"internet: an IPv4-mapped private address", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("::ffff:10.0.0.1", 80), Proto: 6}, false},
		{"internet: the IPv6 link-local range", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("fe80::1", 80), Proto: 6}, false},
		{"internet: the configured resolver over UDP", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("192.168.1.53", 53), Proto: 17}, true},
		{"internet: the resolver on another port", egress.Packet{Class: egress.Internet, Hook: egress.Forward, Dst: out("192.168.1.53", 80), Proto: 6}, false},
	}
	for _, c := range cases {
		got, rule := p.Allows(c.pk)
		require.Equal(t, c.want, got, "%s: decided by %s", c.name, rule)
	}
}

func TestBridgeName_FitsAnInterfaceNameAndSaysTheClass(t *testing.T) {
	t.Parallel()
	p := policy()
	name, err := p.BridgeName(egress.Internet, 2_000_000_000)
	require.NoError(t, err)
	require.LessOrEqual(t, len(name), 15)
	require.True(t, strings.HasPrefix(name, p.Prefix+"i"), name)
	other := egress.New("convergence-other")
	require.NotEqual(t, p.Prefix, other.Prefix, "two installations, two prefixes")
	_, err = p.BridgeName(egress.Platform, 1<<62)
	require.Error(t, err)

	c, err := egress.ParseClass("")
	require.NoError(t, err)
	require.Equal(t, egress.Platform, c)
	_, err = egress.ParseClass("everything")
	require.ErrorContains(t, err, "use platform, internet, none")
}

// TestApply_TheKernelHoldsThePolicy installs the policy in the host's firewall (tests run as
// root, as the provisioner must), reads it back, and removes it.
func TestApply_TheKernelHoldsThePolicy(t *testing.T) {
	t.Parallel()
	p := withReach(egress.New("convergence-test-" + t.Name()))
	t.Cleanup(func() { _ = p.Remove() })
	require.NoError(t, p.Apply())
	require.NoError(t, p.Apply(), "applying again replaces the table")

	holds, err := p.Holds()
	require.NoError(t, err)
	require.True(t, holds)
	got, err := p.Installed()
	require.NoError(t, err)
	var want []string
	for _, r := range p.Rules() {
		want = append(want, r.String())
	}
	require.Equal(t, want, got)

	require.NoError(t, p.Remove())
	holds, err = p.Holds()
	require.NoError(t, err)
	require.False(t, holds, "gone")
	_, err = p.Installed()
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, p.Remove(), "removing what is gone is no error")
}
