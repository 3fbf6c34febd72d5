package ledger

import (
	"cmp"
	"slices"
	"strings"
)

// AddTotals and SortGroups let the external tests build expected summaries the way Summarize
// does.
func AddTotals(t *Totals, o Totals) { t.add(o) }

func SortGroups(gs []Group) {
	slices.SortFunc(gs, func(a, b Group) int {
		return cmp.Or(cmp.Compare(a.OrgID, b.OrgID), cmp.Compare(a.EnvID, b.EnvID),
			strings.Compare(a.Provider, b.Provider), strings.Compare(a.Model, b.Model), a.Period.Compare(b.Period))
	})
}
