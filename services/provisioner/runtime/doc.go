// Package runtime runs tenant containers for the provisioner service.
//
// The provisioner drives a [Runtime]: make a tenant exist and run ([Runtime.Ensure]), wait until
// it answers ([Runtime.WaitHealthy]), look at it ([Runtime.Status], [Runtime.Inspect],
// [Runtime.Probe], [Runtime.Logs]), rotate its key ([Runtime.PutSecrets]), remove it
// ([Runtime.Remove]), and watch and reconcile everything it owns ([Runtime.List],
// [Runtime.Events]). [Docker] runs a container per tenant on one Docker engine; [Swarm] a
// service per tenant on a Docker Swarm, with the same names, labels and hardening where a
// service can express them (what it cannot is listed in the README). Both go through the Docker
// SDK, never the CLI.
//
// A tenant is described by a [Spec]. Its container and its private bridge network have
// deterministic names derived from the environment id, and carry the convergence.* labels
// (see [LabelManaged] and the others), so the reconciler can tell what belongs to Convergence
// and never touches anything else. Containers are hardened as DESIGN.md section 4 requires:
// non-root, read-only root filesystem with a small tmpfs /tmp, all capabilities dropped,
// no-new-privileges, memory without swap, CPU and PID limits, size-capped logs, no Docker
// socket. [Docker.Ensure] inspects every container it creates and refuses to start one whose
// hardening the engine did not apply.
//
// Each tenant network takes a small subnet (/28 by default) from the runtime's own pool
// ([DockerConfig].SubnetPool), because the engine's default address pools run out after about
// 30 bridge networks.
//
// Images are never pulled: a tenant image must already exist on the engine (see
// tenant-templates for the default one).
package runtime
