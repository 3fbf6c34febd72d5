// Package runtime runs tenant containers for the provisioner service.
//
// [Docker] is what the provisioner drives, on one Docker engine through the Docker SDK: make a
// tenant's container exist and run ([Docker.Ensure]), wait until it answers
// ([Docker.WaitHealthy]), look at it ([Docker.Status], [Docker.Inspect], [Docker.Probe],
// [Docker.Logs]), remove it ([Docker.Remove]), and watch and reconcile everything it owns
// ([Docker.List], [Docker.Events]). An interface over it waits for a second runtime (Swarm).
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
