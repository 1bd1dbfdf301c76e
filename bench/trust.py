#!/usr/bin/env python3
"""Trust: what verifying against the release keys (TUF, docs/trust.md) adds to ``list-versions``
and to the resolve step of an upgrade. Goal: a refresh with nothing new adds under 50 ms.

    .venv/bin/python bench/trust.py [--runs 20] [--cli-runs 10] [--tags 50] [--json PATH]

Set-up (not measured): the shipped v1.3 .. v1.6 and ``--tags`` more tags (copies of v1.4,
v1.9.0 ...) in a repository of its own, ``osctl-bench/trust-<random>`` of the local registry;
every tag signed by hand with python-tuf (tests/support/tuf_by_hand.py: one ECDSA P-256 key per
role, the conventions of docs/trust.md, nothing of ``osctl release``) and the metadata published
as OCI artifacts in ``<repository>-tuf``, as a publisher's would be.

1. Refresh with nothing new: ``TufClient.refresh`` on a warm metadata folder (what a host that
   refreshed before pays at every command: root, timestamp, snapshot and targets checked, only
   the timestamp and the next root's absence asked of the registry), a new client each run.
2. Cold refresh: the same into an empty folder (a host's first refresh: every file fetched).
3. Resolve a version for an upgrade, in-process, as ``osctl upgrade`` does: with a trust root,
   ``HostTrust.require`` (a refresh, the signed manifest fetched by its digest and checked by
   TUF) and the manifest by that digest; beside it, without one, ``pull.resolve`` (the tag's
   manifest).
4. ``osctl list-versions --json`` wall time (a process each run) with ``OSCTL_TRUST_ROOT`` set
   (its metadata folder warmed by a first, unmeasured run) and without, one of each in turn.
5. What a command with a trust root pays once, in a fresh process after what every command
   imports anyway: importing the TUF adapter (python-tuf, securesystemslib, cryptography), and
   that import with a refresh with nothing new (the first verification in a process also loads
   the signature code). This, not the refresh, is most of the difference in 4.

Everything is removed at the end (both repositories, the bench host's root), also on Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (OSCTL, REGISTRY, REPO, Bench, BenchHost, Goal, Parser, Row, Section, figure, main_alone, run,
                    run_alone, say, time_command)
from tests.support import registry_tools
from tests.support.tuf_by_hand import HandRepo

SHIPPED = ["v1.3", "v1.4", "v1.5", "v1.6"]
GOAL = 0.050  # a refresh with nothing new adds under 50 ms


class TrustBench(Bench):
    name = "trust"
    title = "Trust: the cost of verifying against the release keys"

    def __init__(self, runs: int = 20, cli_runs: int = 10, tags: int = 50) -> None:
        self.runs, self.cli_runs = runs, cli_runs
        self.path = f"osctl-bench/trust-{secrets.token_hex(3)}"
        self.repo = f"{REGISTRY}/{self.path}"
        self.tags = SHIPPED + [f"v1.9.{i}" for i in range(tags)]
        self.host = BenchHost("bench-trust", REPO / ".run" / "bench-trust-root", self.repo)
        self.scratch = Path(tempfile.mkdtemp(prefix="osctl-bench-trust-"))
        self.root_file = self.scratch / "root.json"
        self.published = False

    def prepare(self) -> None:
        from osctl.adapters.ociartifact import put_file
        from osctl.adapters.registry import Registry

        say(f"trust: {len(self.tags)} tags in {self.repo}, signed by hand, metadata in {self.repo}-tuf ...")
        self.host.fresh()
        for version in SHIPPED:
            registry_tools.copy_tags(REGISTRY, "osctl/os", version, self.path, [version])
        registry_tools.copy_tags(REGISTRY, "osctl/os", "v1.4", self.path, self.tags[len(SHIPPED):])
        images = Registry(self.repo)
        keys = HandRepo()
        for version in self.tags:
            body, media_type = images.manifest_body(version)
            keys.sign(version, body, repository=self.repo, media_type=media_type)
        metadata = Registry(f"{self.repo}-tuf", push=True)
        self.published = True
        for name, data in keys.publish().items():
            put_file(metadata, name, data)
        self.root_file.write_bytes(keys.root_bytes)

    def measure(self) -> Section:
        from osctl.adapters.registry import Registry
        from osctl.adapters.tufclient import TufClient
        from osctl.domain.settings import Settings
        from osctl.operations.pull import resolve
        from osctl.operations.trust import HostTrust

        root = self.root_file.read_bytes()
        target = "v1.5"

        def refresh(cache: Path) -> float:
            client = TufClient(cache, root, metadata=Registry(f"{self.repo}-tuf"), images=Registry(self.repo))
            start = time.perf_counter()
            client.refresh()
            return time.perf_counter() - start

        say(f"trust: {self.runs} warm and {self.runs} cold refreshes ...")
        warm_cache = self.scratch / "warm"
        refresh(warm_cache)  # the host's first refresh, not measured
        warm = [refresh(warm_cache) for _ in range(self.runs)]
        cold = []
        for index in range(self.runs):
            cache = self.scratch / f"cold-{index}"
            cold.append(refresh(cache))
            shutil.rmtree(cache, ignore_errors=True)

        say(f"trust: {self.runs} resolves of {target} with and without a trust root ...")
        host_root = self.scratch / "resolve-host"
        host_root.mkdir()

        def resolve_trusted() -> float:
            start = time.perf_counter()
            settings = Settings(root_option=str(host_root), image_option=self.repo,
                                trust_root_option=str(self.root_file), env={})
            signed = HostTrust(settings).require(target)
            Registry(self.repo).manifest(signed.digest)
            return time.perf_counter() - start

        def resolve_plain() -> float:
            start = time.perf_counter()
            resolve(Registry(self.repo), self.repo, target)
            return time.perf_counter() - start

        resolve_trusted()  # its metadata folder warm, as on a host that refreshed before
        trusted, plain = [], []
        for _ in range(self.runs):  # interleaved: a busy moment of the machine hits both alike
            trusted.append(resolve_trusted())
            plain.append(resolve_plain())

        say(f"trust: {self.cli_runs} runs of osctl list-versions --json with and without a trust root ...")
        with_root = {**self.host.env, "OSCTL_TRUST_ROOT": str(self.root_file)}
        listing = [*OSCTL, "list-versions", "--json"]
        time_command(listing, 1, with_root, warmup=0)  # the host's first refresh, not measured
        listing_trusted, listing_plain = [], []
        for _ in range(self.cli_runs):  # interleaved, as the resolves
            listing_trusted += time_command(listing, 1, with_root, warmup=0)
            listing_plain += time_command(listing, 1, self.host.env, warmup=0)

        say(f"trust: {self.cli_runs} fresh processes importing python-tuf and refreshing ...")
        firsts = [self.fresh_process(warm_cache) for _ in range(self.cli_runs)]

        refresh_warm = figure("refresh, nothing new (warm metadata folder)", warm, goal=GOAL)
        refresh_cold = figure("refresh, cold (empty metadata folder)", cold)
        resolve_with = figure(f"resolve {target} with a trust root", trusted)
        resolve_without = figure(f"resolve {target} without (the tag's manifest)", plain, peer="no trust")
        list_with = figure(f"osctl list-versions --json ({len(self.tags)} tags), trusted", listing_trusted)
        list_without = figure("osctl list-versions --json, no trust root", listing_plain, peer="no trust")
        loading = figure("import python-tuf (fresh process)", [f[0] for f in firsts])
        first = figure("import + refresh, nothing new (fresh process)", [f[1] for f in firsts])
        figures = [refresh_warm, refresh_cold, resolve_with, resolve_without, list_with, list_without, loading, first]
        rows = [Row(refresh_warm.name, refresh_warm, goals=[Goal("< 50 ms", GOAL)]),
                Row(refresh_cold.name, refresh_cold),
                Row(resolve_with.name, resolve_with, peer=resolve_without),
                Row(list_with.name, list_with, peer=list_without),
                Row(loading.name, loading),
                Row(first.name, first)]
        added_resolve = statistics.median(trusted) - statistics.median(plain)
        added_listing = statistics.median(listing_trusted) - statistics.median(listing_plain)
        notes = [f"  added by verification: resolve {added_resolve * 1000:+.0f} ms, "
                 f"list-versions {added_listing * 1000:+.0f} ms (difference of the medians); "
                 f"goal: a refresh with nothing new under {GOAL * 1000:.0f} ms",
                 f"  {len(self.tags)} signed targets; metadata as OCI artifacts in {self.repo}-tuf"]
        return Section(self.title, rows, [(self.title, figures)], notes)

    def fresh_process(self, cache: Path) -> tuple[float, float]:
        """In a new process, after what every command imports anyway: the seconds spent importing
        the TUF adapter (python-tuf, securesystemslib, cryptography), and those of the import and
        a refresh with nothing new together (the first refresh of a process also loads the key
        and signature code python-tuf imports only when it verifies)."""
        code = ("import sys, time, pathlib, osctl.cli.main, osctl.operations.versions\n"
                "from osctl.adapters.registry import Registry\n"
                "start = time.perf_counter()\n"
                "from osctl.adapters.tufclient import TufClient\n"
                "imported = time.perf_counter()\n"
                "cache, root, repo = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_bytes(), sys.argv[3]\n"
                "TufClient(cache, root, metadata=Registry(repo + '-tuf'), images=Registry(repo)).refresh()\n"
                "print(imported - start, time.perf_counter() - start)\n")
        out = run([sys.executable, "-c", code, str(cache), str(self.root_file), self.repo], env=self.host.env).stdout
        imported, total = map(float, out.split())
        return imported, total

    def clean(self) -> list[str]:
        problems = []
        for path in (self.path, f"{self.path}-tuf"):
            try:
                registry_tools.delete_repository(REGISTRY, path)
            except Exception as exc:  # noqa: BLE001 - clean what else we can
                problems.append(f"deleting {path} from the registry: {exc}")
        shutil.rmtree(self.host.root, ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)
        return problems


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="in-process refreshes and resolves (each)")
    parser.add_argument("--cli-runs", type=int, default=10, help="osctl list-versions runs (each)")
    parser.add_argument("--tags", type=int, default=50, help="signed tags beside the four shipped versions")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    if min(args.runs, args.cli_runs) < 1 or args.tags < 0:
        parser.error("--runs and --cli-runs must be at least 1, --tags at least 0")
    os.environ.pop("OSCTL_TRUST_ROOT", None)
    run_alone(TrustBench(args.runs, args.cli_runs, args.tags), args.json_path)


if __name__ == "__main__":
    main_alone(main)
