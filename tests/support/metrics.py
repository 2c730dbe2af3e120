"""Scraping a server's Prometheus endpoint in tests."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int) -> dict[str, list]:
    """``/metrics`` parsed: family name -> its samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def requests(families: dict[str, list]) -> dict[tuple[str, str], float]:
    return {
        (s.labels["method"], s.labels["code"]): s.value
        for s in families.get("smcs_requests", [])
        if s.name == "smcs_requests_total"
    }
