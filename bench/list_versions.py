#!/usr/bin/env python3
"""CLI latency: ``osctl list-versions --json`` with 200 tags in the registry and 20 stored
versions, ``osctl --help`` and ``osctl status --json``, beside ``docker images``, ``docker ps``
and ``docker --help``. Goals (issue 16): list-versions under 0.3 s, status --json under 0.2 s,
--help under 0.1 s.

    .venv/bin/python bench/list_versions.py [--runs 15] [--json bench/results/list_versions.json]

It builds 20 real OS versions (v2.0.0 .. v2.0.19, FROM v1.4 with their own label and manifest)
and 180 more tags in the repository ``osctl-bench/os`` of the local registry, stores the 20 on
a bench host under .run/, measures, and removes all of it again.
"""

from __future__ import annotations

import io
import tarfile

import docker

from common import (DOCKER, OSCTL, REGISTRY, REPO, Bench, BenchHost, Goal, Parser, Row, Section, clean_bench, figure,
                    main_alone, parallel, run_alone, say, time_command)
from tests.support import registry_tools

BENCH_REPO = "osctl-bench/os"
REAL = [f"v2.0.{i}" for i in range(20)]
COPIES = [f"v1.9.{i}" for i in range(180)]
SOURCE = f"{REGISTRY}/osctl/os:v1.4"


def release_text(client: docker.DockerClient, image: str) -> str:
    """The release.yaml inside ``image``, read through a created (never started) container."""
    holder = client.containers.create(image, command=["/bin/true"])
    try:
        bits, _ = holder.get_archive("/usr/lib/osctl/release.yaml")
        with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
            return tar.extractfile(tar.next()).read().decode()  # type: ignore[union-attr]
    finally:
        holder.remove(force=True)


class CliBench(Bench):
    name = "cli"
    title = "CLI latency (wall clock, per command)"

    def __init__(self, runs: int = 15, keep: bool = False) -> None:
        self.runs = runs
        self.keep = keep
        self.repo = f"{REGISTRY}/{BENCH_REPO}"
        self.host = BenchHost("bench-list", REPO / ".run" / "bench-list-root", self.repo)
        self.client: docker.DockerClient | None = None

    def prepare(self) -> None:
        self.client = client = docker.from_env()
        self.host.fresh()
        client.images.pull(SOURCE)
        text = release_text(client, SOURCE)
        say(f"cli: preparing {len(REAL)} OS versions and {len(COPIES)} more tags in {self.repo} ...")
        parallel([lambda v=v: registry_tools.os_version_variant(client, SOURCE, self.repo, v, text) for v in REAL],
                 workers=4)
        registry_tools.copy_tags(REGISTRY, "osctl/os", "v1.4", BENCH_REPO, COPIES)
        for version in REAL:
            self.host.osctl("pull", version, "--quiet")

    def measure(self) -> Section:
        say(f"cli: {self.runs} runs of each command ...")
        env = self.host.env

        def timed(*args: str) -> list[float]:
            return time_command([*OSCTL, *args], self.runs, env)

        figures = [
            figure("osctl list-versions --json (200 tags, 20 stored)", timed("list-versions", "--json"), goal=0.3),
            figure("osctl list-versions --json --offline", timed("list-versions", "--json", "--offline")),
            figure("osctl --help", timed("--help"), goal=0.1),
            figure("osctl status --json", timed("status", "--json"), goal=0.2),
            figure("peer: docker images", time_command([*DOCKER, "images"], self.runs), peer="docker"),
            figure("peer: docker ps", time_command([*DOCKER, "ps"], self.runs), peer="docker"),
            figure("peer: docker --help", time_command([*DOCKER, "--help"], self.runs), peer="docker"),
        ]
        listing, offline, helps, status, images, ps, docker_help = figures
        rows = [Row("osctl list-versions --json (200 tags, 20 stored)", listing, peer=images,
                    goals=[Goal("< 0.3 s", 0.3)]),
                Row("osctl list-versions --json --offline", offline, peer=images),
                Row("osctl --help", helps, peer=docker_help, goals=[Goal("< 0.1 s", 0.1)]),
                Row("osctl status --json", status, peer=ps, goals=[Goal("< 0.2 s", 0.2)])]
        notes = ["  peers: list-versions beside docker images, status beside docker ps, --help beside docker --help"]
        return Section(self.title, rows, [(self.title, figures)], notes)

    def clean(self) -> list[str]:
        if self.keep:
            env = self.host.env
            return [f"kept (--keep): OSCTL_ROOT={env['OSCTL_ROOT']} OSCTL_HOST_ID={env['OSCTL_HOST_ID']} "
                    f"OSCTL_IMAGE={env['OSCTL_IMAGE']}"]
        return clean_bench(self.client or docker.from_env(), [self.host], BENCH_REPO,
                           [f"{self.repo}:{version}" for version in REAL])


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--keep", action="store_true", help="leave the bench host and repository (to profile)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    run_alone(CliBench(args.runs, args.keep), args.json_path)


if __name__ == "__main__":
    main_alone(main)
