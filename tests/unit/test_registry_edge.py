"""The registry edge without an engine: the typed values outside text is parsed into, what the
registry adapter refuses, and the engine adapter against a stub dockerd that redirects (issue #19).

The end-to-end attacks (a stub registry against real osctl commands and a real engine) are in
tests/hostile/test_registry_edge.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from osctl.adapters import registry as registry_module
from osctl.adapters.engine import Engine
from osctl.adapters.registry import Registry
from osctl.errors import EngineError, RegistryError, UsageError
from osctl.models.refs import Digest, ImageRef, Tag
from osctl.models.registry import TagManifest, Unreadable
from osctl.operations.osimage import image_target
from tests.support.stub_registry import StubRegistry, sha256

GOOD = "sha256:" + "0123456789abcdef" * 4
NAME = "hostile/os"


# -- the typed values ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "sha256:/../../../../volumes/x", "sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha512:" + "a" * 128,
    GOOD + "/", GOOD + "\n", " " + GOOD, "", None, 5, ["sha256:" + "a" * 64],
])
def test_a_digest_is_only_ever_a_digest(text: object) -> None:
    with pytest.raises(ValueError, match="not a sha256 digest"):
        Digest(text)


def test_a_digest_is_the_text_it_was_made_from() -> None:
    digest = Digest(GOOD)
    assert digest == GOOD and json.dumps(digest) == json.dumps(GOOD) and digest.hex == GOOD[7:]


@pytest.mark.parametrize("text", ["../x", ".hidden", "-x", "a/b", "a" * 129, "v1 .4", "", "v1\n"])
def test_bad_tags_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an image tag"):
        Tag(text)


@pytest.mark.parametrize(("text", "repository", "tag", "digest", "domain"), [
    ("127.0.0.1:5000/osctl/os:v1.4", "127.0.0.1:5000/osctl/os", "v1.4", None, "127.0.0.1:5000"),
    (f"127.0.0.1:5000/osctl/os@{GOOD}", "127.0.0.1:5000/osctl/os", None, GOOD, "127.0.0.1:5000"),
    (f"localhost/os:v1@{GOOD}", "localhost/os", "v1", GOOD, "localhost"),
    ("registry.example.com/a/b", "registry.example.com/a/b", None, None, "registry.example.com"),
    ("[::1]:5000/os:v2", "[::1]:5000/os", "v2", None, "[::1]:5000"),
    ("osctl/os:v1.4", "osctl/os", "v1.4", None, None),
    ("busybox", "busybox", None, None, None),
])
def test_references_parse_into_their_parts_and_back(text: str, repository: str, tag: str | None,
                                                    digest: str | None, domain: str | None) -> None:
    ref = ImageRef.parse(text)
    assert (ref.repository, ref.tag, ref.digest, ref.registry) == (repository, tag, digest, domain)
    assert str(ref) == text


@pytest.mark.parametrize("text", [
    "127.0.0.1:5000/osctl/os@sha256:/../../../../volumes/x", "127.0.0.1:5000/osctl/../os", "os:../../x",
    "127.0.0.1:5000/OS", "os@sha256:abc", "os:v1:v2", "/os", "os/", "os//x", "", "a" * 600, 7,
])
def test_bad_references_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="not an image reference"):
        ImageRef.parse(text)


def test_a_reference_by_digest_drops_the_tag() -> None:
    ref = ImageRef("127.0.0.1:5000/osctl/os").at(Digest(GOOD))
    assert (str(ref), ref.pin) == (f"127.0.0.1:5000/osctl/os@{GOOD}", GOOD)
    with pytest.raises(ValueError):
        ImageRef("127.0.0.1:5000/osctl/os").at("sha256:/../x")  # type: ignore[arg-type]


# -- image validate's target: no registry nobody named -------------------------------------------
def repository() -> str:
    return "127.0.0.1:5000/osctl/os"


def test_a_bare_version_is_a_version_of_the_configured_image() -> None:
    assert str(image_target("v1.4", repository, pull=True)) == "127.0.0.1:5000/osctl/os:v1.4"


@pytest.mark.parametrize("text", ["latest", "busybox", "main", "v1 4"])
def test_a_bare_word_that_is_not_a_version_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="not a version"):
        image_target(text, repository, pull=True)


@pytest.mark.parametrize("text", ["osctl/os:v1.4", "library/ubuntu:latest", "ubuntu:22.04"])
def test_a_reference_without_a_registry_is_refused_unless_nothing_is_pulled(text: str) -> None:
    with pytest.raises(UsageError, match="names no registry host") as refused:
        image_target(text, repository, pull=True)
    assert refused.value.hint and "--no-pull" in refused.value.hint
    assert str(image_target(text, repository, pull=False)) == text


# -- the registry adapter against crafted answers --------------------------------------------------
@pytest.fixture
def stub() -> Iterator[StubRegistry]:
    with StubRegistry() as served:
        yield served


@pytest.fixture
def make(stub: StubRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], Registry]:
    monkeypatch.setattr(registry_module, "WAIT_MIN", 0.0)
    monkeypatch.setattr(registry_module, "WAIT_MAX", 0.0)
    return lambda: Registry(stub.repository(NAME), certs_dir=str(tmp_path), docker_config=str(tmp_path))


def image_doc(config: object = None, layers: object = None) -> dict[str, object]:
    return {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": config if config is not None else {"size": 10, "digest": GOOD},
            "layers": layers if layers is not None else [{"size": 5, "digest": GOOD}]}


def test_a_good_manifest_gives_typed_facts(stub: StubRegistry, make: Callable[[], Registry]) -> None:
    digest = stub.manifest(NAME, "v1.0", image_doc())
    found = make().manifest("v1.0")
    assert found == TagManifest("v1.0", Digest(digest), 15, found.media_type, Digest(GOOD))
    assert isinstance(found.digest, Digest) and isinstance(found.config, Digest)


@pytest.mark.parametrize(("doc", "why"), [
    (image_doc(config={"size": "abc", "digest": GOOD}), "config.size is 'abc', not a byte count"),
    (image_doc(config={"size": True, "digest": GOOD}), "config.size"),
    (image_doc(config={"size": -1, "digest": GOOD}), "config.size"),
    (image_doc(layers=5), "layers is int '5', not a list"),
    (image_doc(layers=[7]), "layers[0] is int"),
    (image_doc(layers=[{"size": 1, "digest": "sha256:/../../../../volumes/x"}]), "layers[0].digest"),
    (image_doc(config={"size": 1, "digest": "sha256:/../../../../volumes/x"}), "config.digest"),
    (image_doc(config="x"), "config is str"),
    ({"schemaVersion": 2, "manifests": 5}, "manifests is not a list"),
    ({"schemaVersion": 2, "manifests": [{"size": 1, "digest": "../x"}]}, "manifests[0].digest"),
    ([1, 2, 3], "not a JSON object"),
    (b"\xff\xfe not json", "not a JSON object"),
    (b"[" * 1_000_000, "not a JSON object"),  # nested deeper than the JSON decoder goes
])
def test_a_malformed_manifest_is_that_tags_registry_error(stub: StubRegistry, make: Callable[[], Registry],
                                                           doc: object, why: str) -> None:
    stub.manifest(NAME, "v1.0", doc)
    with pytest.raises(RegistryError) as refused:
        make().manifest("v1.0")
    assert why in refused.value.message and stub.host in refused.value.message and "v1.0" in refused.value.message


@pytest.mark.parametrize("header", ["sha256:/../../../../volumes/victim", "sha256:" + "A" * 64, "md5:abc", ""])
def test_a_digest_header_must_be_a_digest(stub: StubRegistry, make: Callable[[], Registry], header: str) -> None:
    stub.manifest(NAME, "v1.0", image_doc(), digest=header)
    for ask in (make().manifest, make().digest):
        with pytest.raises(RegistryError, match=f"Docker-Content-Digest that is not a digest for {NAME}:v1.0"):
            ask("v1.0")


def test_a_digest_header_must_be_the_manifests_own(stub: StubRegistry, make: Callable[[], Registry]) -> None:
    stub.manifest(NAME, "v1.0", image_doc(), digest="sha256:" + "f" * 64)
    with pytest.raises(RegistryError, match=f"a manifest under another digest for {NAME}:v1.0"):
        make().manifest("v1.0")


def test_a_huge_answer_is_refused_without_holding_it(stub: StubRegistry, make: Callable[[], Registry]) -> None:
    stub.manifest(NAME, "v1.0", b"{" + b" " * (registry_module.MAX_BODY + 10) + b"}")
    with pytest.raises(RegistryError, match="more than 4 MiB"):
        make().manifest("v1.0")


@pytest.mark.parametrize("tags", [5, "v1.0", {"v1.0": 1}, ["v1.0", 2], [None]])
def test_a_tag_list_that_is_not_a_list_of_strings_is_refused(stub: StubRegistry, make: Callable[[], Registry],
                                                             tags: object) -> None:
    stub.tags(NAME, tags)
    with pytest.raises(RegistryError, match="not a list of strings"):
        make().tags()


def test_names_that_are_not_tags_are_left_out(stub: StubRegistry, make: Callable[[], Registry]) -> None:
    stub.tags(NAME, ["v1.0", "../../volumes/x", "v2.0\n", "v2.1"])
    assert make().tags() == ["v1.0", "v2.1"]


def test_one_bad_manifest_does_not_hide_the_others(stub: StubRegistry, make: Callable[[], Registry]) -> None:
    stub.manifest(NAME, "v1.0", image_doc())
    stub.manifest(NAME, "v2.0", image_doc(layers=5))
    found = make().manifests(["v1.0", "v2.0", "v3.0"])
    assert isinstance(found["v1.0"], TagManifest) and "v3.0" not in found
    assert isinstance(found["v2.0"], Unreadable) and "layers is int" in found["v2.0"].reason


def test_config_labels_are_read_and_checked_against_their_digest(stub: StubRegistry,
                                                                 make: Callable[[], Registry]) -> None:
    stub.image(NAME, "v1.0", {"io.osctl.os.version": "v1.0"})
    registry = make()
    config = registry.manifest("v1.0").config
    assert config is not None and registry.image_labels(config, "v1.0") == {"io.osctl.os.version": "v1.0"}
    forged = json.dumps({"config": {"Labels": {"io.osctl.os.version": "v9"}}}).encode()
    stub.set(f"/v2/{NAME}/blobs/{config}", 200, forged)
    with pytest.raises(RegistryError, match="does not hash to"):
        registry.image_labels(config, "v1.0")
    labels = json.dumps({"config": {"Labels": {"a": 1}}}).encode()
    stub.set(f"/v2/{NAME}/blobs/{sha256(labels)}", 200, labels)
    with pytest.raises(RegistryError, match="labels are not a map of strings"):
        registry.image_labels(Digest(sha256(labels)), "v1.0")


# -- the engine adapter: no redirect followed, nothing removed that is not the host's -------------
API = "/v1.41"


@pytest.fixture
def dockerd(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubRegistry]:
    """A stub playing dockerd on TCP: it answers /version and what each test sets."""
    with StubRegistry() as served:
        served.set("/version", 200, {"ApiVersion": API[2:], "Version": "stub"})
        monkeypatch.setenv("DOCKER_HOST", f"tcp://{served.host}")
        yield served


def test_a_redirect_of_the_engine_is_never_followed(dockerd: StubRegistry) -> None:
    ref = "127.0.0.1:5000/osctl/os:v1.4"
    dockerd.set(f"{API}/images/{ref}", 301, b"", {"Location": f"{API}/volumes/victim"}, methods=("DELETE",))
    dockerd.set(f"{API}/volumes/victim", 204, b"", methods=("DELETE", "GET"))
    engine = Engine(connect_attempts=1)
    try:
        with pytest.raises(EngineError, match="redirected DELETE .* refused"):
            engine.untag(ref)
    finally:
        engine.close()
    assert ("DELETE", f"{API}/images/{ref}?force=False&noprune=True") in dockerd.seen
    assert dockerd.requested("/volumes/") == []


@pytest.mark.parametrize("ref", ["127.0.0.1:5000/osctl/os@sha256:/../../../../volumes/victim",
                                 "127.0.0.1:5000/osctl/../../volumes/victim"])
def test_a_reference_out_of_grammar_never_reaches_the_engine(dockerd: StubRegistry, ref: str) -> None:
    engine = Engine(connect_attempts=1)
    try:
        for call in (engine.untag, engine.image, engine.pull):
            with pytest.raises(UsageError, match="refusing to give the engine"):
                call(ref)
    finally:
        engine.close()
    assert [path for _, path in dockerd.seen if "/images/" in path or "/volumes/" in path] == []


@pytest.mark.parametrize(("kind", "labels"), [("container", {"io.osctl.host": "other"}), ("volume", {}),
                                              ("volume", {"io.osctl.host": "other"})])
def test_what_is_not_the_hosts_is_never_removed(dockerd: StubRegistry, kind: str, labels: dict[str, str]) -> None:
    if kind == "container":
        dockerd.set(f"{API}/containers/victim/json", 200, {"Id": "victim", "Config": {"Labels": labels}})
    else:
        dockerd.set(f"{API}/volumes/victim", 200, {"Name": "victim", "Labels": labels})
    engine = Engine(connect_attempts=1)
    try:
        with pytest.raises(EngineError, match=f"refusing to remove {kind} victim: it is not osctl's for host mine"):
            if kind == "container":
                engine.stop_and_remove("victim", host_id="mine")
            else:
                engine.remove_volume("victim", host_id="mine")
    finally:
        engine.close()
    assert [method for method, _ in dockerd.seen if method in ("DELETE", "POST")] == []


# -- what is kept about images -----------------------------------------------------------------
def test_image_facts_are_kept_by_digest_and_survive_damage(tmp_path: Path) -> None:
    from osctl.domain.imagefacts import ImageFacts

    facts = ImageFacts(tmp_path)
    config, manifest = Digest("sha256:" + "1" * 64), Digest("sha256:" + "2" * 64)
    assert facts.version_label(config) is None and facts.failure(manifest) is None
    facts.remember_label(config, None)
    facts.remember_failure(manifest, "version differs")
    assert ImageFacts(tmp_path).version_label(config) == "" and ImageFacts(tmp_path).failure(manifest) == "version differs"
    facts.forget_failure(manifest)
    assert facts.failure(manifest) is None
    (facts.folder / f"{config.hex}.json").write_text("{damaged")
    assert facts.version_label(config) is None  # a cache: damage is as if nothing were known
