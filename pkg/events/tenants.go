package events

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Subjects the provisioner answers on: core NATS request/reply, served by every provisioner
// replica in one queue group. The API asks them for its tenant endpoints.
const (
	SubjectTenantAdmit   = "provisioner.tenant.admit"
	SubjectTenantGet     = "provisioner.tenant.get"
	SubjectTenantList    = "provisioner.tenant.list"
	SubjectTenantArchive = "provisioner.tenant.archive"
	SubjectKeyRotate     = "provisioner.tenant.key.rotate"
	SubjectKeyDeliver    = "provisioner.tenant.key.deliver"
	// SubjectTemplates answers which templates the provisioner can run (TemplatesQuery →
	// Templates).
	SubjectTemplates = "provisioner.templates"
)

// TenantAdmission (on SubjectTenantAdmit) asks the provisioner to admit a tenant: check the
// organization's quota and the name, record the tenant as provisioning with a port and a new
// API key, and queue its tenant.spawn, all in one transaction. It is answered by a
// TenantAdmitted. The asker has validated the spec.
type TenantAdmission struct {
	OrgID int64 `json:"orgId"`
	// MaxTenants is the organization's quota of tenants that are not destroyed.
	MaxTenants int    `json:"maxTenants"`
	Name       string `json:"name"`
	Language   string `json:"language,omitempty"`
	Framework  string `json:"framework,omitempty"`
	Image      string `json:"image"`
	Limits     Limits `json:"limits"`
	// Egress is what the tenant's container may reach: one of EgressClasses; "" is
	// EgressDefault.
	Egress string `json:"egress,omitempty"`
	// ReplyKey is the public key (X25519) the new tenant key is sealed to in the answer, so it
	// never crosses the bus in clear.
	ReplyKey  []byte `json:"replyKey"`
	RequestID string `json:"requestId,omitempty"`
}

// Egress classes: what a tenant's container may reach besides the replies to requests it is
// sent. The provisioner has the host's firewall enforce them.
const (
	// EgressPlatform reaches the platform's tenant API and nothing else.
	EgressPlatform = "platform"
	// EgressInternet reaches the platform's tenant API and the public internet, never a
	// private, link-local or cloud metadata address.
	EgressInternet = "internet"
	// EgressNone reaches nothing.
	EgressNone = "none"

	EgressDefault = EgressPlatform
)

// EgressClasses lists the egress classes.
var EgressClasses = []string{EgressPlatform, EgressInternet, EgressNone}

// ParseEgress reads an egress class; "" is EgressDefault.
func ParseEgress(s string) (string, error) {
	if s == "" {
		return EgressDefault, nil
	}
	if !slices.Contains(EgressClasses, s) {
		return "", fmt.Errorf("egress %q is not known: use %s (default %s)", s, strings.Join(EgressClasses, ", "), EgressDefault)
	}
	return s, nil
}

// Reasons of a refused admission (natsrpc.Error.Reason).
const (
	ReasonTenantLimit = "tenant_limit"
	ReasonNameTaken   = "name_taken"
	ReasonNoFreePort  = "no_free_port"
)

// TenantAdmitted answers a TenantAdmission: the tenant as recorded, and its API key sealed to
// the admission's ReplyKey.
type TenantAdmitted struct {
	Tenant    TenantView `json:"tenant"`
	SealedKey []byte     `json:"sealedKey"`
}

// KeyRotation (on SubjectKeyRotate) asks the provisioner for a new API key for tenant EnvID,
// answered by a KeyRotated. The new key is what the tenant's container gets from then on; it
// is put into a running container only when a KeyDelivery asks, once the asker has recorded the
// key's digest and so accepts it (or, should the asker fail in between, by the provisioner's
// reconciler a while later). The tenant's older keys are left to the asker, which expires them.
type KeyRotation struct {
	EnvID int64 `json:"envId"`
	// ReplyKey is the public key (X25519) the new key is sealed to in the answer.
	ReplyKey  []byte `json:"replyKey"`
	RequestID string `json:"requestId,omitempty"`
}

// KeyRotated answers a KeyRotation: the fact of the new key (also published as
// tenant.key.issued) and the key sealed to the rotation's ReplyKey.
type KeyRotated struct {
	Key       TenantKeyIssued `json:"key"`
	SealedKey []byte          `json:"sealedKey"`
}

// KeyDelivery (on SubjectKeyDeliver) asks the provisioner to put tenant EnvID's newest key into
// its container, which goes on running; it is answered by a KeyDelivered.
type KeyDelivery struct {
	EnvID     int64  `json:"envId"`
	RequestID string `json:"requestId,omitempty"`
}

// KeyDelivered answers a KeyDelivery. Delivered is false when the tenant has no container to
// deliver to: a container made later starts with the newest key.
type KeyDelivered struct {
	Delivered bool `json:"delivered"`
}

// TenantQuery (on SubjectTenantGet) asks for one tenant, answered by its TenantView.
type TenantQuery struct {
	EnvID int64 `json:"envId"`
}

// TenantListQuery (on SubjectTenantList) asks for tenants, newest first: those of OrgID (0 for
// every organization) in one of Statuses, with ids below Before (0 for no bound), at most
// Limit. It is answered by a TenantList.
type TenantListQuery struct {
	OrgID    int64    `json:"orgId,omitempty"`
	Statuses []string `json:"statuses"`
	Before   int64    `json:"before,omitempty"`
	Limit    int      `json:"limit"`
}

// TenantList answers a TenantListQuery; More says whether tenants are left past the last.
type TenantList struct {
	Tenants []TenantView `json:"tenants"`
	More    bool         `json:"more"`
}

// ArchiveQuery (on SubjectTenantArchive) asks for the last logs archived when a tenant's
// container was removed, answered by an Archive.
type ArchiveQuery struct {
	EnvID int64 `json:"envId"`
}

// Archive is a tenant's last archived logs; empty when none were archived.
type Archive struct {
	Logs []byte `json:"logs"`
}

// TenantView is a tenant as the provisioner records it and the API shows it.
type TenantView struct {
	EnvID           int64        `json:"envId"`
	OrgID           int64        `json:"orgId"`
	Name            string       `json:"name"`
	Status          string       `json:"status"`
	DesiredStatus   string       `json:"desiredStatus"`
	Health          *string      `json:"health"`
	Reason          *string      `json:"reason,omitempty"`
	Port            *int         `json:"port"`
	APIKeyPrefix    string       `json:"apiKeyPrefix"`
	Language        *string      `json:"language,omitempty"`
	Framework       *string      `json:"framework,omitempty"`
	Image           string       `json:"image"`
	Limits          TenantLimits `json:"limits"`
	Egress          string       `json:"egress"`
	Generation      int64        `json:"generation"`
	ContainerName   *string      `json:"containerName,omitempty"`
	CreatedAt       time.Time    `json:"createdAt"`
	UpdatedAt       time.Time    `json:"updatedAt"`
	StatusChangedAt time.Time    `json:"statusChangedAt"`
	DestroyedAt     *time.Time   `json:"destroyedAt,omitempty"`
}

// TenantLimits are a tenant's resource limits as the API shows them.
type TenantLimits struct {
	MemoryMB int64   `json:"memoryMb"`
	CPUs     float64 `json:"cpus"`
	PIDs     int64   `json:"pids"`
}

// TemplatesQuery asks the provisioner for its templates.
type TemplatesQuery struct{}

// Templates are the tenant templates a spawn may name, each with whether this installation
// can run it now.
type Templates struct {
	Templates []TemplateInfo `json:"templates"`
}

// TemplateInfo is one template: a spawn names its language (and framework); Default is the
// one a spawn that names neither runs. Available says whether its image is on the Docker host;
// Reason says why not, and how to fix it.
type TemplateInfo struct {
	Language  string `json:"language"`
	Framework string `json:"framework"`
	Image     string `json:"image"`
	Default   bool   `json:"default"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
}
