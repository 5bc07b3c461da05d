"""Configuration is data, validated at start-up with errors that name the file and the field."""

import shutil

import pytest
import yaml

from app.adapters import build_adapters
from app.catalogue.catalogue import load_catalogue
from app.core.errors import ConfigError
from app.core.settings import SHIPPED_CONFIG_DIR, Settings

SHIPPED_ORGANISATIONS = {
    "oxfordshire-county",
    "cherwell",
    "oxford-city",
    "south-oxfordshire",
    "vale-of-white-horse",
    "west-oxfordshire",
    "thames-valley-police",
    "nhs-bob-icb",
    "contact-centre",
}


@pytest.fixture
def config_dir(tmp_path):
    for name in ("organisations.yaml", "services.yaml"):
        shutil.copy(SHIPPED_CONFIG_DIR / name, tmp_path / name)
    return tmp_path


def edit(path, key, index, **changes):
    data = yaml.safe_load(path.read_text())
    data[key][index].update(changes)
    path.write_text(yaml.safe_dump(data))


def test_shipped_configuration_loads_with_every_organisation():
    catalogue = load_catalogue(SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": "http://x"})
    assert set(catalogue.organisations) == SHIPPED_ORGANISATIONS
    assert catalogue.triage.id == "contact-centre"
    assert catalogue.services["anti-social-behaviour"].tiers == ("district", "police")


def test_environment_values_fill_placeholders(config_dir, monkeypatch):
    monkeypatch.setenv("IAP_SANDBOX_URL", "http://10.0.0.1:9")
    catalogue = load_catalogue(config_dir)
    assert catalogue.organisations["cherwell"].adapter.model_dump()["base_url"] == (
        "http://10.0.0.1:9/cherwell/open311/v2"
    )


@pytest.mark.parametrize(
    ("file", "key", "index", "change", "message"),
    [
        ("organisations.yaml", "organisations", 1, {"kind": "parish"}, "organisations[1].kind"),
        ("organisations.yaml", "organisations", 2, {"areas": []}, "organisations[2].areas"),
        ("organisations.yaml", "organisations", 3, {"id": "Bad Id"}, "organisations[3].id"),
        (
            "organisations.yaml",
            "organisations",
            4,
            {"shares": ["shoe_size"]},
            "organisations[4].shares.0",
        ),
        ("services.yaml", "services", 0, {"tiers": ["parish"]}, "services[0].tiers.0"),
        ("services.yaml", "services", 0, {"colour": "red"}, "services[0].colour"),
        ("services.yaml", "services", 1, {"code": "pothole"}, "duplicate id 'pothole'"),
    ],
)
def test_bad_configuration_names_file_and_field(config_dir, file, key, index, change, message):
    edit(config_dir / file, key, index, **change)
    with pytest.raises(ConfigError) as caught:
        load_catalogue(config_dir, variables={"IAP_SANDBOX_URL": "http://x"})
    assert file in str(caught.value)
    assert message in str(caught.value)


def test_missing_file_and_broken_yaml_are_reported(config_dir):
    (config_dir / "services.yaml").write_text("services: [unclosed")
    with pytest.raises(ConfigError, match=r"services\.yaml: not valid YAML"):
        load_catalogue(config_dir)
    (config_dir / "services.yaml").unlink()
    with pytest.raises(ConfigError, match=r"services\.yaml: file not found"):
        load_catalogue(config_dir)


def test_a_triage_desk_is_required(config_dir):
    path = config_dir / "organisations.yaml"
    data = yaml.safe_load(path.read_text())
    data["organisations"] = [o for o in data["organisations"] if o["kind"] != "triage"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="triage"):
        load_catalogue(config_dir, variables={"IAP_SANDBOX_URL": "http://x"})


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ({"type": "carrier-pigeon"}, "unknown adapter 'carrier-pigeon'"),
        ({"type": "open311", "api_key": "k"}, "base_url"),
        ({"type": "open311", "api_key": "k", "base_url": "not a url"}, "base_url"),
        ({"type": "open311", "base_url": "http://x/v2"}, "api_key"),
        ({"type": "open311", "api_key": "k", "base_url": "http://x/v2", "poll_seconds": 0}, "poll"),
    ],
)
async def test_bad_adapter_settings_fail_start_up_by_organisation(config_dir, adapter, message):
    edit(config_dir / "organisations.yaml", "organisations", 1, adapter=adapter)
    catalogue = load_catalogue(config_dir, variables={"IAP_SANDBOX_URL": "http://x"})
    with pytest.raises(ConfigError, match=message) as caught:
        build_adapters(catalogue, None, Settings())
    assert "cherwell" in str(caught.value)
