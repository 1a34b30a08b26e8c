"""A small client of the daemon's HTTP API, for the CLI when ``harness serve`` runs."""

from __future__ import annotations

from typing import Any

import httpx

from harness.daemon.serve import DaemonInfo
from harness.errors import DaemonError

__all__ = ["DaemonClient"]


class DaemonClient:
    def __init__(self, info: DaemonInfo, token: str, *, timeout: float = 600.0) -> None:
        self._http = httpx.Client(
            base_url=info.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            r = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise DaemonError(f"cannot reach harness serve: {exc}") from None
        data = r.json() if r.content else {}
        if r.status_code >= 400:
            raise DaemonError(str(data.get("error", r.text)), status=r.status_code)
        return data

    def launch(self, spec: dict[str, Any], source: str) -> str:
        return str(self._call("POST", "/runs", {"spec": spec, "source": source})["id"])

    def run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/runs/{run_id}")
        return result

    def abort(self, run_id: str, reason: str) -> None:
        self._call("POST", f"/runs/{run_id}/abort", {"reason": reason, "by": "terminal"})

    def send(self, text: str) -> list[int]:
        return list(self._call("POST", "/send", {"text": text})["ids"])

    def heartbeat(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/heartbeat")
        return result
