package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// priority puts the chains just before the filter tables of iptables (Docker's among them), so
// that what this table drops is dropped whatever they accept.
const priority = nftables.ChainPriority(-10)

// Apply replaces the installation's table in the kernel with the policy's rules, in one
// transaction: at no moment are the tenants without rules. It needs CAP_NET_ADMIN in the
// host's network namespace.
func (p Policy) Apply() error {
	conn, table, err := p.batch()
	if err != nil {
		return err
	}
	conn.AddTable(table)
	accept := nftables.ChainPolicyAccept
	chains := map[Hook]*nftables.Chain{}
	for hook, num := range map[Hook]*nftables.ChainHook{Input: nftables.ChainHookInput, Forward: nftables.ChainHookForward} {
		chains[hook] = conn.AddChain(&nftables.Chain{Name: string(hook), Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: num, Priority: nftables.ChainPriorityRef(priority), Policy: &accept})
	}
	for _, r := range p.Rules() {
		conn.AddRule(&nftables.Rule{Table: table, Chain: chains[r.Hook], Exprs: p.compile(r),
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.String())})
	}
	return p.flush(conn, "install")
}

// Remove deletes the installation's table; tenants of the installation then reach what
// Docker's own rules let them. Removing a table that is not there is no error.
func (p Policy) Remove() error {
	conn, _, err := p.batch()
	if err != nil {
		return err
	}
	return p.flush(conn, "remove")
}

// batch starts a transaction that first removes the installation's table, if there is one:
// adding a table that exists is no error, and deleting it then takes its chains and rules.
func (p Policy) batch() (*nftables.Conn, *nftables.Table, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, nil, fmt.Errorf("nftables: %w", err)
	}
	table := &nftables.Table{Name: p.Table, Family: nftables.TableFamilyINet}
	conn.AddTable(table)
	conn.DelTable(table)
	return conn, table, nil
}

// flush commits the transaction; what names it in errors.
func (p Policy) flush(conn *nftables.Conn, what string) error {
	err := conn.Flush()
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s nftables table %s: %w (it needs root or CAP_NET_ADMIN in the host's network namespace)", what, p.Table, err)
	case err != nil:
		return fmt.Errorf("%s nftables table %s: %w", what, p.Table, err)
	}
	return nil
}

// Installed returns the comments of the rules the kernel holds in the installation's table,
// each hook's in order ([Rule.String] of each rule Apply installed), or an error wrapping
// os.ErrNotExist when there is no such table.
func (p Policy) Installed() ([]string, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	table, err := conn.ListTableOfFamily(p.Table, nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables table %s: %w", p.Table, errors.Join(os.ErrNotExist, err))
	}
	var out []string
	for _, hook := range []Hook{Input, Forward} {
		rules, err := conn.GetRules(table, &nftables.Chain{Name: string(hook), Table: table})
		if err != nil {
			return nil, fmt.Errorf("nftables chain %s %s: %w", p.Table, hook, err)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			out = append(out, comment)
		}
	}
	return out, nil
}

// Holds reports whether the kernel holds the policy's rules as Apply installed them (it
// compares the rules' comments): false when the table is gone, say after `nft flush ruleset`
// or a firewall reload, or when its rules were changed.
func (p Policy) Holds() (bool, error) {
	got, err := p.Installed()
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	want := make([]string, 0, len(got))
	for _, r := range p.Rules() {
		want = append(want, r.String())
	}
	return slices.Equal(got, want), nil
}

// compile turns a rule into nftables expressions, as nft itself would for
//
//	iifname "<prefix><letter>*" ct state established,related ip daddr <dst> tcp dport <port> accept
func (p Policy) compile(r Rule) []expr.Any {
	ifname := p.Prefix
	if r.Class != "" {
		ifname += r.Class.letter()
	}
	// A comparison of fewer bytes than the register holds matches names that start with them.
	es := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(ifname)},
	}
	if r.Replies {
		es = append(es,
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)})
	}
	if r.Dst.IsValid() {
		es = append(es, daddr(r.Dst)...)
	}
	if r.Proto != 0 {
		es = append(es,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{r.Proto}})
	}
	if r.Port != 0 {
		es = append(es,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(r.Port)})
	}
	verdict := expr.VerdictDrop
	if r.Accept {
		verdict = expr.VerdictAccept
	}
	return append(es, &expr.Counter{}, &expr.Verdict{Kind: verdict})
}

// daddr matches destination addresses in prefix: the address family first, then the masked
// destination field of its header.
func daddr(prefix netip.Prefix) []expr.Any {
	family, offset := byte(unix.NFPROTO_IPV4), uint32(16)
	if prefix.Addr().Is6() {
		family, offset = unix.NFPROTO_IPV6, 24
	}
	size := uint32(prefix.Addr().BitLen() / 8)
	mask := make([]byte, size)
	for i := range prefix.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: prefix.Masked().Addr().AsSlice()},
	}
}
