"""The host's extra services merged into a version's own."""

from __future__ import annotations

import pytest

from osctl.domain.servicemerge import merge_services
from osctl.errors import ConfigError
from osctl.models.manifest import ServiceSpec


def spec(**fields: object) -> ServiceSpec:
    return ServiceSpec.model_validate(fields)


OWN = {
    "network": spec(oneshot=True, command=["true"]),
    "ntp": spec(command=["ntpd"], volumes=["/var/lib/ntp:/var/lib/ntp"], environment={"A": "1"},
                depends_on={"network": {"condition": "service_completed_successfully"}}),
}


def test_an_override_changes_only_the_keys_it_gives() -> None:
    merged = merge_services(OWN, {"ntp": spec(environment={"NTP_SERVERS": "127.0.0.1"})}, "config.yaml")
    ntp = merged["ntp"]
    assert ntp.environment == {"A": "1", "NTP_SERVERS": "127.0.0.1"}
    assert ntp.command == ["ntpd"] and ntp.volumes[0].target == "/var/lib/ntp"
    assert ntp.depends_on["network"].condition == "service_completed_successfully"


def test_a_new_service_is_added_and_may_depend_on_the_versions_services() -> None:
    merged = merge_services(OWN, {"exporter": spec(image="127.0.0.1:5000/x:1", depends_on=["ntp"])}, "config.yaml")
    assert set(merged) == {"network", "ntp", "exporter"}


def test_a_bare_override_of_a_missing_service_is_ignored() -> None:
    merged = merge_services({"network": OWN["network"]}, {"ntp": spec(environment={"X": "1"})}, "config.yaml")
    assert set(merged) == {"network"}


def test_a_broken_graph_names_the_settings_file() -> None:
    with pytest.raises(ConfigError, match=r"config.yaml: services.exporter.depends_on.nope: unknown service"):
        merge_services(OWN, {"exporter": spec(command=["x"], depends_on=["nope"])}, "config.yaml")
