// Package egress decides what a tenant container may reach, and has the host's firewall
// enforce it.
//
// Every tenant network is a bridge whose interface name says whose it is and what it may
// reach: "cv" + a four-letter tag of the installation + a letter of its class + the env id in
// base 36 (see [Policy.BridgeName]). One nftables table per installation holds rules that
// match those names by prefix, so it is made once, at the provisioner's start, and covers
// every tenant network made later without being touched again:
//
//   - into the host (the input hook): replies to connections the host opened (the health
//     checks, published ports), and the platform API's port for tenants of class platform and
//     internet; nothing else of the host, whatever it listens on;
//   - through the host (the forward hook): replies, and for class internet the public
//     internet and the DNS resolvers, never a private, link-local, metadata or other special
//     range ([Blocked]); nothing for the other classes.
//
// Docker's own rules still apply after these (an accept here only ends this table's chain),
// so tenants stay apart from each other and from the stack's networks as Docker keeps them.
// The rules are built once as data ([Policy.Rules]); [Policy.Allows] evaluates that data,
// for tests and for operators asking "may a tenant reach X", without sending traffic anywhere,
// and [Policy.Apply] compiles the same data into the kernel's table.
package egress

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/convergence-dev/convergence/pkg/events"
)

// Class is what a tenant may reach besides the replies to its own connections.
type Class string

// The classes, and the default a spawn that names none gets (see events.EgressClasses).
const (
	// Platform reaches the platform's tenant API and nothing else.
	Platform Class = events.EgressPlatform
	// Internet reaches the platform's tenant API and the public internet, never a private,
	// link-local, metadata or other special range.
	Internet Class = events.EgressInternet
	// None reaches nothing: the tenant only answers requests.
	None Class = events.EgressNone

	Default Class = events.EgressDefault
)

// ParseClass reads a class; "" is [Default].
func ParseClass(s string) (Class, error) {
	c, err := events.ParseEgress(s)
	return Class(c), err
}

// letter is the class's letter in bridge names.
func (c Class) letter() string {
	switch c {
	case Internet:
		return "i"
	case None:
		return "n"
	default:
		return "p"
	}
}

// maxIfname is the longest interface name Linux allows (IFNAMSIZ less its NUL).
const maxIfname = 15

// Policy is one installation's egress rules.
type Policy struct {
	// Table names the nftables table (family inet) that holds the rules.
	Table string
	// Prefix starts the interface name of every tenant bridge of the installation.
	Prefix string
	// APIPort is the host port of the platform's tenant API.
	APIPort uint16
	// Resolvers are the DNS servers tenants of class internet may query, whatever range
	// they are in (a resolver on the local network is common).
	Resolvers []netip.Addr
}

// New returns the names of the policy of the installation whose objects are named from root
// (the runtime's name prefix and instance id); the caller sets APIPort and Resolvers.
func New(root string) Policy {
	sum := sha256.Sum256([]byte(root))
	tag := strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:4]
	return Policy{Table: "convergence-" + tag, Prefix: "cv" + tag}
}

// BridgeName is the interface name of the bridge of tenant envID's network, of class c.
func (p Policy) BridgeName(c Class, envID int64) (string, error) {
	name := p.Prefix + c.letter() + strconv.FormatInt(envID, 36)
	if envID <= 0 || len(name) > maxIfname {
		return "", fmt.Errorf("env id %d makes no bridge name of at most %d characters", envID, maxIfname)
	}
	return name, nil
}

// Blocked lists the ranges a tenant of class internet never reaches through the host: the
// private, shared, loopback, link-local (cloud metadata services among them), documentation,
// benchmarking, multicast and reserved ranges of IPv4 and IPv6.
func Blocked() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.0.0.0/24"),
		netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("198.18.0.0/15"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.0/24"),
		netip.MustParsePrefix("224.0.0.0/4"),
		netip.MustParsePrefix("240.0.0.0/4"),
		netip.MustParsePrefix("::/128"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("::ffff:0:0/96"),
		netip.MustParsePrefix("64:ff9b::/96"),
		netip.MustParsePrefix("100::/64"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("fc00::/7"),
		netip.MustParsePrefix("fe80::/10"),
		netip.MustParsePrefix("ff00::/8"),
	}
}

// Hook is where a rule applies: to packets for the host itself, or through it.
type Hook string

// The hooks.
const (
	Input   Hook = "input"
	Forward Hook = "forward"
)

// Rule is one rule of a policy. Zero fields match anything.
type Rule struct {
	Hook Hook
	// Class restricts the rule to tenant bridges of one class; "" means every tenant bridge.
	Class Class
	// Replies matches packets of connections already established (or related to one), such
	// as the answers to the host's health checks.
	Replies bool
	Dst     netip.Prefix
	// Proto (6 TCP, 17 UDP) and Port match the destination port.
	Proto  uint8
	Port   uint16
	Accept bool
	// Why says what the rule is for; it is the rule's comment in the kernel.
	Why string
}

const (
	protoTCP uint8 = 6
	protoUDP uint8 = 17
)

// Rules returns the policy's rules, each hook's in order: the first that matches decides.
func (p Policy) Rules() []Rule {
	var rs []Rule
	add := func(r Rule) { rs = append(rs, r) }

	add(Rule{Hook: Input, Replies: true, Accept: true, Why: "replies to connections the host opened"})
	for _, c := range []Class{Platform, Internet} {
		add(Rule{Hook: Input, Class: c, Proto: protoTCP, Port: p.APIPort, Accept: true, Why: "the platform API"})
	}
	p.resolverRules(Input, add)
	add(Rule{Hook: Input, Why: "nothing else of the host"})

	add(Rule{Hook: Forward, Replies: true, Accept: true, Why: "replies to connections the tenant was sent"})
	p.resolverRules(Forward, add)
	for _, b := range Blocked() {
		add(Rule{Hook: Forward, Class: Internet, Dst: b, Why: "no private, link-local, metadata or special range"})
	}
	add(Rule{Hook: Forward, Class: Internet, Accept: true, Why: "the public internet"})
	add(Rule{Hook: Forward, Why: "nothing else"})
	return rs
}

func (p Policy) resolverRules(h Hook, add func(Rule)) {
	for _, r := range p.Resolvers {
		for _, proto := range []uint8{protoUDP, protoTCP} {
			add(Rule{Hook: h, Class: Internet, Dst: netip.PrefixFrom(r, r.BitLen()), Proto: proto, Port: 53, Accept: true, Why: "DNS resolver"})
		}
	}
}

// Packet is what [Policy.Allows] judges: a packet from a tenant bridge of Class.
type Packet struct {
	Class   Class
	Hook    Hook // Input when Dst is one of the host's own addresses
	Replies bool
	Dst     netip.AddrPort
	Proto   uint8
}

// Allows reports whether the policy lets the packet pass, and the rule that decided.
func (p Policy) Allows(pk Packet) (bool, Rule) {
	for _, r := range p.Rules() {
		if r.matches(pk) {
			return r.Accept, r
		}
	}
	return true, Rule{} // Not a tenant's packet: the chains' policy is accept.
}

func (r Rule) matches(pk Packet) bool {
	return r.Hook == pk.Hook &&
		(r.Class == "" || r.Class == pk.Class) &&
		(!r.Replies || pk.Replies) &&
		(!r.Dst.IsValid() || r.Dst.Contains(pk.Dst.Addr().Unmap()) || r.Dst.Contains(pk.Dst.Addr())) &&
		(r.Proto == 0 || r.Proto == pk.Proto) &&
		(r.Port == 0 || r.Port == pk.Dst.Port())
}

// String renders the rule as nft would list it, roughly.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString(string(r.Hook) + ":")
	if r.Class == "" {
		b.WriteString(" every tenant")
	} else {
		b.WriteString(" " + string(r.Class))
	}
	if r.Replies {
		b.WriteString(" ct state established,related")
	}
	if r.Dst.IsValid() {
		b.WriteString(" daddr " + r.Dst.String())
	}
	switch r.Proto {
	case protoTCP:
		b.WriteString(" tcp")
	case protoUDP:
		b.WriteString(" udp")
	}
	if r.Port != 0 {
		b.WriteString(" dport " + strconv.Itoa(int(r.Port)))
	}
	if r.Accept {
		b.WriteString(" accept")
	} else {
		b.WriteString(" drop")
	}
	return b.String() + " # " + r.Why
}

// Resolvers reads the DNS servers of a resolv.conf (the host's, which Docker forwards tenants'
// lookups to), leaving out loopback ones, which Docker replaces with public resolvers. A file
// that cannot be read gives none.
func Resolvers(path string) []netip.Addr {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil && !a.IsLoopback() {
			out = append(out, a.WithZone(""))
		}
	}
	return out
}
