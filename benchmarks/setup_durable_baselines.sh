#!/usr/bin/env bash
# Install the durable baselines for benchmarks/durable_baselines.py: Debian's etcd-server
# (3.4.23 in bookworm) and zookeeper (3.8.0), without leaving either running as a system
# service (the benchmark starts its own three-member clusters in temporary directories).
#
# Idempotent: a second run installs nothing and stops nothing that is not running. Needs root
# and Debian's package archive. Prints where the binaries are.
#
#     sudo bash benchmarks/setup_durable_baselines.sh
set -euo pipefail

PACKAGES=(etcd-server zookeeper)
SERVICES=(etcd zookeeper)

die() {
    echo "setup_durable_baselines: $*" >&2
    exit 1
}

[[ "$(id -u)" == 0 ]] || die "must run as root (apt-get install); try: sudo bash $0"
command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian system"

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if ((${#missing[@]})); then
    # Keep the packages' maintainer scripts from starting their services: a policy-rc.d that
    # answers 101 ("action forbidden") for the length of the install, unless one is already
    # there (containers often ship exactly that), in which case it is left as it is.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    cleanup() { if ((own_policy)); then rm -f "$policy"; fi; }
    trap cleanup EXIT
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
        echo "setup_durable_baselines: install failed; refreshing the package lists once" >&2
        apt-get update -qq || die "apt-get update failed: is Debian's archive reachable?"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            || die "could not install ${missing[*]}"
    fi
    cleanup
    trap - EXIT
fi

# Whatever the packages (or an earlier install) set up, no system instance stays running or
# enabled: the benchmark's clusters use their own ports and data directories.
for service in "${SERVICES[@]}"; do
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl disable --now "$service" >/dev/null 2>&1 || true
    elif [[ -x "/etc/init.d/$service" ]]; then
        "/etc/init.d/$service" stop >/dev/null 2>&1 || true
        command -v update-rc.d >/dev/null && update-rc.d "$service" disable >/dev/null 2>&1 || true
    fi
done
# A service instance runs as the package's own user; stop any that is still there.
for user in etcd zookeeper; do
    id "$user" >/dev/null 2>&1 || continue
    mapfile -t pids < <(pgrep -u "$user" || true)
    if ((${#pids[@]})); then
        echo "setup_durable_baselines: stopping the system $user instance (${pids[*]})" >&2
        kill -TERM "${pids[@]}" 2>/dev/null || true
        sleep 2
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
done

etcd_bin="$(command -v etcd || true)"
[[ -n "$etcd_bin" ]] || die "etcd-server installed but no etcd binary on PATH"
zk_jar="$(ls /usr/share/java/zookeeper.jar 2>/dev/null || true)"
[[ -n "$zk_jar" ]] || die "zookeeper installed but /usr/share/java/zookeeper.jar is missing"
java_bin="$(command -v java || true)"
[[ -n "$java_bin" ]] || die "zookeeper installed but no java on PATH"

echo "etcd: $etcd_bin ($("$etcd_bin" --version | head -n1))"
echo "zookeeper: $zk_jar ($(dpkg-query -W -f='${Version}' zookeeper)), classpath from /etc/zookeeper/conf/environment"
echo "java: $java_bin"
