# Shared helpers for the project's scripts (sourced, not run).
# Why a library: setup, demo and test must agree on addresses and paths.

OSCTL_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OSCTL_STATE="${OSCTL_DEV_STATE:-$OSCTL_REPO/.run}"       # project-owned folder: registry data, logs
OSCTL_VENV="${OSCTL_VENV:-$OSCTL_REPO/.venv}"
OSCTL_REGISTRY="${OSCTL_REGISTRY:-127.0.0.1:5000}"
OSCTL_BOOT_CACHE="$OSCTL_STATE/boot"   # Debian kernel + systemd-boot, from their .debs (scripts/setup)
export OSCTL_IMAGE="${OSCTL_IMAGE:-$OSCTL_REGISTRY/osctl/os}"

say()  { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: poll until COMMAND succeeds, bounded.
wait_for() {
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

engine_answers()   { /usr/bin/docker version --format '{{.Server.Version}}' ; }
registry_answers() { curl -fsS --max-time 2 "http://$OSCTL_REGISTRY/v2/" ; }
