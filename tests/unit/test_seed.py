"""Seed services: read from the config file or EDS_SEED_FILE, created once, never undoing API changes."""

import re
from pathlib import Path

import pytest
import yaml

from eds_server.model import LimitExceeded
from eds_server.registry import Limits, Registry
from eds_server.settings import SettingsError, load_settings

WEB = {"hosts": [{"ip_address": "10.0.0.5", "port": 8001}], "policy": {"overprovisioning_factor": 140}}


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def test_seed_from_the_config_file_and_the_seed_file(tmp_path):
    config = write(tmp_path, "eds.yaml", {"port": 9000, "services": {"web": WEB}})
    seed = write(tmp_path, "seed.yaml", {"services": {"api": {"hosts": []}}})
    settings = load_settings(["--config", config], environ={"EDS_SEED_FILE": seed})
    assert settings.port == 9000 and settings.seed_file == seed
    assert settings.services == {"web": WEB, "api": {"hosts": []}}
    # The seed file may also be named in the config file itself.
    config = write(tmp_path, "eds2.yaml", {"seed_file": seed})
    assert load_settings(["--config", config], environ={}).services == {"api": {"hosts": []}}


@pytest.mark.parametrize(
    "seed, message",
    [
        ("services: [web]\n", "services: ['web'] must be a mapping of service name"),
        ({"services": {"web": WEB}, "port": 1}, "the one key 'services'"),
        ("- web\n", "the one key 'services'"),
        ("services: {web: {hosts: [\n", "not valid YAML"),
        ({"services": {"web": {"hosts": [{"ip_address": "db", "port": 1}]}}}, "services.web.hosts[0].ip_address"),
        ({"services": {"web": {"hosts": [{"ip_address": "::1", "port": 0}]}}}, "services.web.hosts[0].port"),
        ({"services": {"web": {"hosts": [], "policy": {"x": 1}}}}, "services.web.policy.x"),
        ({"services": {"web": {}}}, "services.web.hosts: None is required"),
        ({"services": {"bad name": {"hosts": []}}}, "services.bad name.name"),
        ({"services": {"dup": {"hosts": [{"ip_address": "::1", "port": 1}] * 2}}}, "services.dup.hosts[1]"),
    ],
)
def test_a_bad_seed_file_is_refused_naming_the_field(tmp_path, seed, message):
    path = write(tmp_path, "seed.yaml", seed)
    with pytest.raises(SettingsError, match=r"seed file .*seed\.yaml") as error:
        load_settings([], environ={"EDS_SEED_FILE": path})
    assert message in str(error.value)


def test_bad_seed_services_in_the_config_file_name_the_file(tmp_path):
    config = write(tmp_path, "eds.yaml", {"services": {"web": {"hosts": [{"port": 1}]}}})
    with pytest.raises(SettingsError, match=r"config file .*eds\.yaml: services\.web\.hosts\[0\]\.ip_address"):
        load_settings(["--config", config], environ={})


def test_a_service_in_both_files_is_refused(tmp_path):
    config = write(tmp_path, "eds.yaml", {"services": {"web": WEB}})
    seed = write(tmp_path, "seed.yaml", {"services": {"web": {"hosts": []}}})
    with pytest.raises(SettingsError, match="web also in the config file"):
        load_settings(["--config", config], environ={"EDS_SEED_FILE": seed})


def test_a_missing_seed_file(tmp_path):
    with pytest.raises(SettingsError, match="No such file"):
        load_settings([], environ={"EDS_SEED_FILE": str(tmp_path / "nope.yaml")})


def test_seeding_creates_missing_services_and_keeps_existing_ones(store, clock):
    registry = Registry(store)
    created = registry.seed({"web": WEB, "api": {"hosts": [{"ip_address": "::1", "port": 80, "ttl": 5}]}})
    assert sorted(c.name for c in created) == ["api", "web"]
    assert store.get("web").to_dict() == {
        "name": "web",
        "hosts": [
            {
                "ip_address": "10.0.0.5",
                "port": 8001,
                "tags": {"canary": False, "load_balancing_weight": 1},
                "health_status": "HEALTHY",
                "priority": 0,
            }
        ],
        "policy": {"overprovisioning_factor": 140},
    }
    # A seeded ttl counts from the moment it was seeded.
    assert store.get("api").hosts[0].expires_at == clock() + 5
    versions = {s.name: store.version(s.name) for s in store.services()}

    # Same seed again (a restart): nothing is written, no version moves.
    assert registry.seed({"web": WEB, "api": {"hosts": []}}) == []
    assert {s.name: store.version(s.name) for s in store.services()} == versions

    # An API change to a seeded service is not undone by the next start.
    registry.patch_host("web", ("10.0.0.5", 8001), {"health_status": "DRAINING"})
    patched = store.version("web")
    assert registry.seed({"web": WEB}) == []
    assert store.version("web") == patched and store.get("web").hosts[0].health_status == "DRAINING"


def test_a_seed_over_the_host_limit_is_refused(store):
    registry = Registry(store, Limits(max_hosts_per_service=1))
    with pytest.raises(LimitExceeded, match="limit is 1"):
        registry.seed({"web": {"hosts": [{"ip_address": "::1", "port": 1}, {"ip_address": "::1", "port": 2}]}})
    assert store.services() == []


def test_the_readme_seed_example_is_a_valid_seed_file(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [example] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if b.startswith("services:")]
    path = write(tmp_path, "seed.yaml", example)
    services = load_settings([], environ={"EDS_SEED_FILE": path}).services
    assert sorted(services) == ["myservice", "otherservice"]
    assert services["myservice"]["hosts"][1] == {"ip_address": "::1", "port": 8002}
