#!/usr/bin/env python3
"""Scale: many hosts on one engine, each with 10 services, all upgraded one after the other,
then 5 at a time, then by their own agents through an etcd rollout (bench/fleet.py): total
time and per-host cost.

    .venv/bin/python bench/scale.py [--hosts 50] [--at-a-time 5] [--no-fleet] [--json PATH]

Hosts ``bench-scale-00`` .. (each its own root under .run/bench-scale/) run v7.0.1, installed
a few at a time (not measured). Then every host is upgraded to v7.0.2 with ``osctl upgrade``,
one after the other, and then to v7.0.3, ``--at-a-time`` hosts at once; each upgrade pulls the
version (the engine has the image after the first host: the registry is asked, the layers are
not moved again) and swaps all ten services. The services are a small OS's daemons: syslog,
then nine that wait for it to run (crond, a shell loop, a second syslogd, in turn), no network
and no health checks, so the figures are osctl's own cost per host and the engine's container
work, not probe intervals. Per host: each upgrade's wall clock (one after the other), and the
total divided by the hosts (at a time). Everything is removed at the end by label, also after
a failure or Ctrl-C.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import docker

from common import (REGISTRY, REPO, Bench, BenchHost, Figure, Parser, Row, Section, clean_bench, figure, main_alone,
                    os_manifest, parallel, remove_host_objects, run_alone, say)
from fleet import FleetRollout
from tests.support import registry_tools

BENCH_REPO = "osctl-bench/scale-os"
SOURCE = f"{REGISTRY}/osctl/os:v1.5"
VERSIONS = ("v7.0.1", "v7.0.2", "v7.0.3", "v7.0.4")  # installed, one after the other, at a time, by agents
INSTALL_AT_A_TIME = 5
ROOTS = REPO / ".run" / "bench-scale"


def services(flavour: str) -> dict[str, dict[str, Any]]:
    """Ten services; ``flavour`` changes each one's environment, so an upgrade replaces all."""
    env = {"BENCH_SET": flavour}
    daemons = [["/bin/crond", "-f", "-l", "8", "-c", "/etc/crontabs"],
               ["/bin/sh", "-c", 'trap "exit 0" TERM; while :; do sleep 1 & wait; done'],
               ["/bin/syslogd", "-n", "-O", "/var/log/extra.log", "-S"]]
    found = {"syslog": {"command": ["/bin/syslogd", "-n", "-O", "/var/log/messages", "-S"], "environment": env,
                        "volumes": ["logs:/var/log"], "network_mode": "none", "restart": "always"}}
    for i in range(9):
        found[f"svc{i}"] = {"command": daemons[i % 3], "environment": env, "network_mode": "none",
                            "depends_on": {"syslog": {"condition": "service_started"}}, "restart": "always"}
    return found


class ScaleBench(Bench):
    name = "scale"
    title = "scale: hosts on one engine, 10 services each, upgraded one after the other and several at a time"

    def __init__(self, hosts: int = 50, at_a_time: int = 5, fleet: bool = True) -> None:
        self.repo = f"{REGISTRY}/{BENCH_REPO}"
        self.at_a_time = at_a_time
        self.rollout = FleetRollout(self.hosts_list(hosts), ROOTS) if fleet else None
        self.hosts = self.rollout.hosts if self.rollout else self.hosts_list(hosts)
        self.client: docker.DockerClient | None = None
        self.image_ids: list[str] = []

    def prepare(self) -> None:
        self.client = client = docker.from_env()
        client.images.pull(SOURCE)
        say(f"scale: building {', '.join(VERSIONS)} in {self.repo} ...")
        for version, flavour in zip(VERSIONS if self.rollout else VERSIONS[:3], "abab"):
            ref = registry_tools.os_version_variant(client, SOURCE, self.repo, version,
                                                    os_manifest(version, services(flavour), "bench/scale.py"))
            self.image_ids.append(str(client.images.get(ref).id))
        say(f"scale: {len(self.hosts)} hosts install {VERSIONS[0]}, {INSTALL_AT_A_TIME} at a time ...")
        for host in self.hosts:
            host.fresh()
        parallel([lambda h=h: h.osctl("upgrade", "--to", VERSIONS[0], "--yes", "--json") for h in self.hosts],
                 workers=INSTALL_AT_A_TIME)

    def measure(self) -> Section:
        n = len(self.hosts)
        say(f"scale: {n} hosts upgrade to {VERSIONS[1]}, one after the other ...")
        t0 = time.perf_counter()
        one = [upgrade(host, VERSIONS[1]) for host in self.hosts]
        one_total = time.perf_counter() - t0
        say(f"scale: {n} hosts upgrade to {VERSIONS[2]}, {self.at_a_time} at a time ...")
        t0 = time.perf_counter()
        many = parallel([lambda h=h: upgrade(h, VERSIONS[2]) for h in self.hosts], workers=self.at_a_time)
        many_total = time.perf_counter() - t0
        k = self.at_a_time
        f_one_total = figure(f"{n} hosts one after the other, total", [one_total])
        f_one_host = figure("  per host: each upgrade (wall clock)", [wall for wall, _s, _d in one])
        f_many_total = figure(f"{n} hosts {k} at a time, total", [many_total])
        f_many_host = figure(f"  per host: total / {n}", [many_total / n])
        figures: list[Figure] = [
            f_one_total, f_one_host,
            figure("  per host: osctl's seconds", [s for _w, s, _d in one]),
            figure("  per host: services down", [d for _w, _s, d in one]),
            f_many_total, f_many_host,
            figure(f"  each upgrade's wall clock, {k} at a time", [wall for wall, _s, _d in many]),
            figure(f"  services down, {k} at a time", [d for _w, _s, d in many]),
        ]
        rows = [Row(f"{n} hosts, one after the other: total", f_one_total),
                Row("  per host: each upgrade", f_one_host),
                Row(f"{n} hosts, {k} at a time: total", f_many_total),
                Row(f"  per host: total / {n}", f_many_host)]
        if self.rollout is not None:
            fleet_figures, fleet_rows = self.rollout.run(VERSIONS[3], k, f_one_host, f_many_total)
            figures += fleet_figures
            rows += fleet_rows
        notes = [f"  scale: {k} at a time took {100 * many_total / one_total:.0f} % of one after the other; each "
                 f"upgrade then took {figures[6].median:.2f} s (median) instead of {f_one_host.median:.2f} s, "
                 f"services down {figures[7].median:.2f} s instead of {figures[3].median:.2f} s"]
        return Section(self.title, rows, [(self.title, figures)], notes + (self.rollout.notes if self.rollout else []))

    def clean(self) -> list[str]:
        """By label, not through osctl: ten calls per host instead of two osctl processes."""
        if self.rollout is not None:
            self.rollout.close()
        client = self.client or docker.from_env()

        def remove(host: BenchHost) -> list[str]:
            problems = remove_host_objects(client, host.host_id, quiet=True)
            shutil.rmtree(host.root, ignore_errors=True)
            return problems

        problems = [p for found in parallel([lambda h=h: remove(h) for h in self.hosts], workers=4) for p in found]
        shutil.rmtree(ROOTS, ignore_errors=True)
        return problems + clean_bench(client, [], BENCH_REPO, self.image_ids)


    def hosts_list(self, count: int) -> list[BenchHost]:
        return [BenchHost(f"bench-scale-{i:02d}", ROOTS / f"bench-scale-{i:02d}", self.repo) for i in range(count)]


def upgrade(host: BenchHost, version: str) -> tuple[float, float, float]:
    """(wall clock, osctl's seconds, services down) of one host's upgrade."""
    t0 = time.perf_counter()
    result = host.osctl_json("upgrade", "--to", version, "--yes")
    wall = time.perf_counter() - t0
    if result.get("result") != "committed":
        raise SystemExit(f"{host.host_id}: osctl upgrade --to {version}: {result}")
    return wall, float(result["seconds"]), float(result["downtime"] or 0.0)


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--at-a-time", type=int, default=5, help="hosts upgraded at once in the second rollout")
    parser.add_argument("--no-fleet", action="store_true", help="skip the rollout by agents through etcd")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    if args.hosts < 1 or not 1 <= args.at_a_time <= args.hosts:
        parser.error("--hosts must be at least 1, --at-a-time from 1 to --hosts")
    run_alone(ScaleBench(args.hosts, args.at_a_time, fleet=not args.no_fleet), args.json_path)


if __name__ == "__main__":
    main_alone(main)
