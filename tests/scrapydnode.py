"""A real Scrapyd node for tests: started with `harvest scrapyd start` (which deploys the
project egg), driven through its JSON API, stopped with `harvest scrapyd stop`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.conftest import harvest

AUTH = ("ops", "test-secret")
CREDENTIALS = {"SCRAPYD_USERNAME": AUTH[0], "SCRAPYD_PASSWORD": AUTH[1]}


@dataclass
class Node:
    home: Path
    port: int
    env: dict[str, str]
    #: Given as `harvest --sources PATH scrapyd start` (else HARVEST_SOURCES in env says it).
    sources: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, endpoint: str, **params: str) -> dict[str, Any]:
        if endpoint == "schedule.json":
            response = requests.post(f"{self.url}/{endpoint}", data=params, auth=AUTH,
                                     timeout=10)
        else:
            response = requests.get(f"{self.url}/{endpoint}", params=params, auth=AUTH,
                                    timeout=10)
        response.raise_for_status()
        return response.json()

    def jobs(self) -> dict[str, list[dict[str, Any]]]:
        return self.api("listjobs.json", project="harvester")

    def job_ids(self) -> list[str]:
        listing = self.jobs()
        return [j["id"] for state in ("pending", "running", "finished") for j in listing[state]]

    def start(self) -> None:
        given = ("--sources", str(self.sources)) if self.sources else ()
        result = harvest(*given, "scrapyd", "start", home=self.home, env=self.env,
                         timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "deployed harvester" in result.stdout

    def stop(self) -> None:
        harvest("scrapyd", "stop", home=self.home, env=self.env)
