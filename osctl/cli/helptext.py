"""``osctl --help`` as click renders it at 80 columns or more (``osctl.cli.app.top_help``).

Written by ``python -m osctl.cli.helptext``; tests/unit/test_cli_lazy.py fails when it differs
from what click renders, so it is rewritten whenever an option or a command changes.
"""

TOP_HELP = (
    "Usage: osctl [OPTIONS] COMMAND [ARGS]...\n"
    "\n"
    "  osctl replaces a host's operating system in toto: every OS version is a\n"
    "  container image, every core service a container, and upgrades swap the whole\n"
    "  set atomically.\n"
    "\n"
    "Options:\n"
    "  --version          Show the version and exit.\n"
    "  --root DIR         The host's root folder; all state lives under it.  [env:\n"
    "                     OSCTL_ROOT; default: /]\n"
    "  --host-id ID       The host's id.  [env: OSCTL_HOST_ID; default:\n"
    "                     <root>/etc/machine-id]\n"
    "  --image REPO       OS image repository without a tag, e.g.\n"
    "                     127.0.0.1:5000/osctl/os.  [env: OSCTL_IMAGE]\n"
    "  --etcd URLS        etcd client URLs, comma-separated, for the fleet.  [env:\n"
    "                     OSCTL_ETCD; settings: fleet.etcd]\n"
    "  --group G          The host's fleet group.  [env: OSCTL_GROUP; settings:\n"
    "                     fleet.group; default: default]\n"
    "  --trust-root FILE  The release keys' root.json this host trusts\n"
    "                     (docs/trust.md).  [env: OSCTL_TRUST_ROOT; settings:\n"
    "                     trust.root]\n"
    "  --json             Print data as JSON (same as each command's --json).\n"
    "  --debug            Show tracebacks and debug logs.\n"
    "  -h, --help         Show this message and exit.\n"
    "\n"
    "Commands:\n"
    "  agent          Apply the host's update policy (manual, download-only,...\n"
    "  boot           Start-up: recover, boot the trial or the default...\n"
    "  bundle         Carry OS versions to hosts with no registry: create,...\n"
    "  cloud-init     Check, show and apply cloud-init user data...\n"
    "  downgrade      Switch the host to an older version (any stored one...\n"
    "  fleet          Roll versions out to groups of hosts in coordinated...\n"
    "  image          Check OS images against the image contract...\n"
    "  list-versions  Show every version in the registry or on this host,...\n"
    "  pin            Keep stored VERSION through every prune.\n"
    "  prune          Remove stored versions beyond the newest KEEP; never the...\n"
    "  pull           Pull VERSION and store it, so it can be booted or...\n"
    "  release        Sign OS versions with the release keys (TUF) and publish...\n"
    "  rollback       Switch back to the previous version.\n"
    "  service        List, inspect, start and stop the system services of the...\n"
    "  status         Show the host, its versions (running, next boot,...\n"
    "  supervise      Keep the active version's services running until SIGTERM...\n"
    "  unpin          Let prune remove VERSION again.\n"
    "  upgrade        Switch the host to a newer version (the first install,...\n"
)

if __name__ == "__main__":
    import json
    from pathlib import Path

    from osctl.cli.app import top_help

    path = Path(__file__)
    text = path.read_text()
    start = text.index("TOP_HELP = ")
    end = text.index("\n\nif __name__")
    lines = "".join(f"    {json.dumps(line)}\n" for line in top_help().splitlines(keepends=True))  # JSON is Python here
    path.write_text(text[:start] + f"TOP_HELP = (\n{lines})" + text[end:])
