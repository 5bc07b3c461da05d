"""IAP_ENV=production checks the alerts' servers like every other target it calls."""

from __future__ import annotations

from app.core.settings import AlertSettings
from tests.test_production import config_dir, organisations, production_settings, refusal


def test_the_alerts_servers_are_outbound_targets(database_url, tmp_path):
    settings = production_settings(
        database_url,
        config_dir(tmp_path, organisations()),
        alerts=AlertSettings(notify_base_url="http://localhost:6011", smtp_host="localhost"),
    )
    refused = refusal(settings)
    assert "IAP_ALERTS__NOTIFY_BASE_URL: localhost resolves to 127.0.0.1" in refused
    assert "IAP_ALERTS__SMTP_HOST: localhost resolves to 127.0.0.1" in refused
