#!/usr/bin/env python3
"""Run every service of every OS image roughly the way osctl will, and check that it works.

    .venv/bin/python system-images/selftest.py [--registry 127.0.0.1:5000] [--only v1.4] [--quick]

Why: a release manifest can be valid YAML and still name a daemon that exits at once,
ignores SIGTERM or never passes its healthcheck. osctl's own tests would then fail far from
the cause. This script reads each image's real /usr/lib/osctl/release.yaml and, per service:

* one-shot services: run to completion, exit code 0 required;
* long-running services: start with init=True (docker-init as PID 1, like osctl), check the
  daemon stays up, exec its healthcheck test (exit 0 required, except the services listed in
  EXPECTED_UNHEALTHY, which must fail), run a small functional probe, then stop it and
  require that it exits on SIGTERM well before the engine would SIGKILL it.

It builds nothing (run build.py first) and only ever touches containers and volumes named
sysimg-selftest-*, which it removes at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import docker
from ruamel.yaml import YAML

PREFIX = "sysimg-selftest"
MANIFEST = "/usr/lib/osctl/release.yaml"
# Releases broken on purpose (for osctl's rollback tests): the daemon runs, health fails.
EXPECTED_UNHEALTHY = {("v1.6", "status")}
# Functional probes beyond the healthcheck: (service, shell command run inside it).
PROBES = {
    "syslog": "logger -t selftest probe-$$ && sleep 0.3 && grep -q probe-$$ /var/log/messages",
    "ntp": "test -s /var/lib/ntp/drift",
    "status": "wget -q -O - http://127.0.0.1:8080/ | grep -q osctl",
    "metrics": "wget -q -O - http://127.0.0.1:9100/metrics | grep -q '^node_load1 '",
}
STOP_TIMEOUT = 10   # seconds the engine waits before SIGKILL
STOP_LIMIT = 3.0    # a daemon that needs longer than this does not handle SIGTERM


class Failure(Exception):
    pass


def read_manifest(client, image: str, version: str) -> dict:
    """The release manifest as shipped inside the image (not the source file)."""
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:  # e.g. removed by an osctl prune: take it from the registry
        client.images.pull(image)
    container = client.containers.create(image, ["/bin/true"], name=f"{PREFIX}-{version}-manifest")
    try:
        stream, _ = container.get_archive(MANIFEST)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            text = tar.extractfile(tar.getmembers()[0]).read().decode()
    finally:
        container.remove(force=True)
    return YAML(typ="safe").load(text)


def volume_binds(svc: dict, version: str, hostroot: Path) -> dict:
    """Named volumes -> per-version test volumes; absolute host paths -> under a temp root."""
    binds = {}
    for spec in svc.get("volumes") or []:
        source, target = spec.split(":")[:2]
        if source.startswith("/"):
            path = hostroot / version / source.lstrip("/")
            path.mkdir(parents=True, exist_ok=True)
            binds[str(path)] = {"bind": target, "mode": "rw"}
        else:
            binds[f"{PREFIX}-{version}-{source}"] = {"bind": target, "mode": "rw"}
    return binds


def health_command(test: list[str]) -> list[str]:
    kind, *rest = test
    return rest if kind == "CMD" else ["/bin/sh", "-c", rest[0]]


def start(client, version: str, image: str, name: str, svc: dict, hostroot: Path):
    if svc.get("network_mode", "bridge") == "host" and not svc.get("oneshot"):
        raise Failure("long-running service on the host network (hosts share one engine)")
    volumes = volume_binds(svc, version, hostroot)
    for source in volumes:
        if not source.startswith("/"):
            client.volumes.create(source, labels={PREFIX: "1"})
    return client.containers.run(
        svc.get("image") or image, svc.get("command"), entrypoint=svc.get("entrypoint"),
        environment=svc.get("environment") or {}, volumes=volumes,
        network_mode=svc.get("network_mode", "bridge"), privileged=bool(svc.get("privileged")),
        init=True, detach=True, name=f"{PREFIX}-{version}-{name}", labels={PREFIX: "1"})


def wait_healthy(container, test: list[str], expect_ok: bool, limit: float = 10.0) -> str:
    """Exec the healthcheck until it passes (or, if broken on purpose, check it keeps failing)."""
    deadline = time.monotonic() + limit
    while True:
        container.reload()
        if container.status != "running":
            raise Failure(f"daemon exited ({container.attrs['State']['ExitCode']}): "
                          + container.logs(tail=5).decode(errors="replace").strip())
        code, out = container.exec_run(health_command(test))
        if code == 0:
            if not expect_ok:
                raise Failure("healthcheck passes, but this release must be broken")
            return "healthy"
        if time.monotonic() > deadline:
            if expect_ok:
                raise Failure(f"healthcheck exits {code}: {out.decode(errors='replace').strip()}")
            return f"unhealthy as intended (exit {code})"
        time.sleep(0.5)


def stop(container) -> str:
    t0 = time.monotonic()
    container.stop(timeout=STOP_TIMEOUT)
    took = time.monotonic() - t0
    container.reload()
    code = container.attrs["State"]["ExitCode"]
    if took > STOP_LIMIT or code == 137:
        raise Failure(f"ignores SIGTERM (stop took {took:.1f}s, exit {code})")
    return f"stops in {took:.1f}s"


def wait_heartbeat(container, limit: float = 75.0) -> str:
    """crond's job runs at the top of a minute: wait for the line it appends."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        code, out = container.exec_run(["/bin/sh", "-c", "tail -n 1 /var/log/heartbeat"])
        if code == 0 and out.startswith(b"heartbeat "):
            return "heartbeat written"
        time.sleep(2)
    raise Failure("no heartbeat line in /var/log/heartbeat within a minute")


def cleanup(client) -> None:
    for c in client.containers.list(all=True, filters={"name": PREFIX}):
        if c.name.startswith(PREFIX + "-"):
            c.remove(force=True, v=True)
    for v in client.volumes.list(filters={"label": PREFIX}):
        if v.name.startswith(PREFIX + "-"):
            v.remove(force=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registry", default="127.0.0.1:5000")
    ap.add_argument("--repository", default="osctl/os")
    ap.add_argument("--only", action="append", default=[], metavar="VERSION")
    ap.add_argument("--quick", action="store_true", help="skip the one-minute cron heartbeat wait")
    args = ap.parse_args()
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        print(f"selftest.py: error: the Docker engine is unreachable: {exc}", file=sys.stderr)
        return 1
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from build import versions
    chosen = args.only or versions()

    failures, running = [], []   # running: (version, name, svc, container)
    hostroot = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))

    def report(version, name, ok, detail):
        print(f"{'ok' if ok else 'FAIL':<5}{version:<6}{name:<9}{detail}", flush=True)
        if not ok:
            failures.append(f"{version} {name}: {detail}")

    cleanup(client)
    try:
        for version in chosen:
            image = f"{args.registry}/{args.repository}:{version}"
            manifest = read_manifest(client, image, version)
            services = manifest["services"]
            for name, svc in services.items():
                deps = svc.get("depends_on") or []
                if set(deps) - set(services):
                    report(version, name, False, f"depends on unknown {set(deps) - set(services)}")
                try:
                    container = start(client, version, image, name, svc, hostroot)
                except (Failure, docker.errors.APIError) as exc:
                    report(version, name, False, f"cannot start: {exc}")
                    continue
                if svc.get("oneshot"):
                    code = container.wait(timeout=30)["StatusCode"]
                    out = container.logs().decode(errors="replace").strip()
                    report(version, name, code == 0, f"one-shot exit {code}: {out}")
                else:
                    running.append((version, name, svc, container))

        time.sleep(2)  # a daemon that dies at once has done so by now
        for version, name, svc, container in running:
            try:
                notes = []
                if svc.get("healthcheck"):
                    expect_ok = (version, name) not in EXPECTED_UNHEALTHY
                    notes.append(wait_healthy(container, svc["healthcheck"]["test"], expect_ok))
                else:
                    container.reload()
                    if container.status != "running":
                        raise Failure(f"exited: {container.logs(tail=5).decode().strip()}")
                    notes.append("running")
                if name in PROBES:
                    code, out = container.exec_run(["/bin/sh", "-c", PROBES[name]])
                    if code:
                        raise Failure(f"probe `{PROBES[name]}` exits {code}: {out.decode().strip()}")
                    notes.append("probe ok")
                if name == "cron" and not args.quick:
                    notes.append(wait_heartbeat(container))
                notes.append(stop(container))
                report(version, name, True, ", ".join(notes))
            except (Failure, docker.errors.APIError) as exc:
                report(version, name, False, str(exc))
    except docker.errors.DockerException as exc:
        report("-", "-", False, f"engine: {exc}")
    finally:
        cleanup(client)
        for path in sorted(hostroot.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        hostroot.rmdir()

    if failures:
        print(f"selftest: {len(failures)} failure(s)", file=sys.stderr)
        return 1
    print("selftest: all services behave")
    return 0


if __name__ == "__main__":
    sys.exit(main())
