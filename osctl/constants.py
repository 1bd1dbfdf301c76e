"""Names that outsiders rely on: labels, paths inside OS images, paths under the host root.

These are contracts (docs/image-format.md, docs/state-layout.md): change them only with a
migration. A leaf module: imports nothing from osctl.
"""

from __future__ import annotations

# Labels on everything osctl creates (containers, volumes), so `docker ps --filter label=...`
# shows one host's system set and nothing else is ever touched.
LABEL_HOST = "io.osctl.host"
LABEL_VERSION = "io.osctl.version"
LABEL_SERVICE = "io.osctl.service"
LABEL_VOLUME = "io.osctl.volume"
LABEL_ROLE = "io.osctl.role"
LABEL_SPEC_HASH = "io.osctl.spec-hash"

# Roles distinguish system service containers from short-lived helper containers.
ROLE_SERVICE = "service"
ROLE_HELPER = "helper"

# The OS image contract.
LABEL_OS_VERSION = "io.osctl.os.version"
MANIFEST_PATH = "/usr/lib/osctl/release.yaml"
TRUST_ROOT_PATH = "/usr/lib/osctl/trust/root.json"  # optional: the release keys' root, travelling with versions
TRUST_ROOT_FILE = "trust-root.json"  # its copy in the stored version's folder

# Layout under the host root (all relative to --root).
CONFIG_FILE = "etc/osctl/config.yaml"
MACHINE_ID_FILE = "etc/machine-id"
STATE_DIR = "var/lib/osctl"
BOOT_DIR = "boot/osctl"
TUF_DIR = f"{STATE_DIR}/tuf"  # the release metadata the host last verified (operations.trust)

# Defaults.
DEFAULT_ROOT = "/"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
SETUP_COMMAND = "scripts/setup"
