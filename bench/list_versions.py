#!/usr/bin/env python3
"""CLI latency: ``osctl list-versions --json`` with 200 tags in the registry and 20 stored
versions, ``osctl --help`` and ``osctl status --json``, beside ``docker images`` and
``docker ps`` for scale. Goals: list-versions under 0.5 s, --help under 0.25 s.

    .venv/bin/python bench/list_versions.py [--runs 15] [--json bench/results/list_versions.json]

It builds 20 real OS versions (v2.0.0 .. v2.0.19, FROM v1.4 with their own label and manifest)
and 180 more tags in the repository ``osctl-bench/os`` of the local registry, stores the 20 on
a bench host under .run/, measures, and removes all of it again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess

import docker

from common import DOCKER, OSCTL, REGISTRY, REPO, figure, report, time_command
from tests.support import registry_tools

BENCH_REPO = "osctl-bench/os"
REAL = [f"v2.0.{i}" for i in range(20)]
COPIES = [f"v1.9.{i}" for i in range(180)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--keep", action="store_true", help="leave the bench host and repository (to profile)")
    args = parser.parse_args()

    client = docker.from_env()
    root = REPO / ".run" / "bench-list-root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    repo = f"{REGISTRY}/{BENCH_REPO}"
    env = {**os.environ, "OSCTL_ROOT": str(root), "OSCTL_HOST_ID": "bench-list", "OSCTL_IMAGE": repo}
    source = f"{REGISTRY}/osctl/os:v1.4"
    try:
        client.images.pull(source)
        manifest = client.containers.create(source, command=["/bin/true"])
        try:
            bits, _ = manifest.get_archive("/usr/lib/osctl/release.yaml")
            import io
            import tarfile
            data = io.BytesIO(b"".join(bits))
            with tarfile.open(fileobj=data) as tar:
                text = tar.extractfile(tar.next()).read().decode()  # type: ignore[union-attr]
        finally:
            manifest.remove(force=True)
        print(f"preparing {len(REAL)} OS versions and {len(COPIES)} more tags in {repo} ...", flush=True)
        for version in REAL:
            registry_tools.os_version_variant(client, source, repo, version, text)
        registry_tools.copy_tags(REGISTRY, "osctl/os", "v1.4", BENCH_REPO, COPIES)
        for version in REAL:
            subprocess.run([*OSCTL, "pull", version, "--quiet"], env=env, check=True, stdout=subprocess.DEVNULL)

        figures = [
            figure("osctl list-versions --json (200 tags, 20 stored)",
                   time_command([*OSCTL, "list-versions", "--json"], args.runs, env), goal=0.5),
            figure("osctl list-versions --json --offline",
                   time_command([*OSCTL, "list-versions", "--json", "--offline"], args.runs, env)),
            figure("osctl --help", time_command([*OSCTL, "--help"], args.runs, env), goal=0.25),
            figure("osctl status --json", time_command([*OSCTL, "status", "--json"], args.runs, env)),
            figure("peer: docker images", time_command([*DOCKER, "images"], args.runs), peer="docker"),
            figure("peer: docker ps", time_command([*DOCKER, "ps"], args.runs), peer="docker"),
        ]
        report("CLI latency (wall clock, per command)", figures, args.json_path)
    finally:
        if args.keep:
            print(f"kept: OSCTL_ROOT={root} OSCTL_HOST_ID=bench-list OSCTL_IMAGE={repo}")
            return
        subprocess.run([*OSCTL, "prune", "--keep", "0"], env=env, stdout=subprocess.DEVNULL, check=False)
        registry_tools.delete_repository(REGISTRY, BENCH_REPO)
        for version in REAL:
            try:
                client.images.remove(f"{repo}:{version}", noprune=False)
            except docker.errors.APIError:
                pass
        shutil.rmtree(root, ignore_errors=True)
        client.close()


if __name__ == "__main__":
    main()
