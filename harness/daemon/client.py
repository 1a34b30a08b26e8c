"""A small client of the daemon's HTTP API, for the CLI when ``harness serve`` runs.

Every failure is a :class:`DaemonError` with one line: the daemon unreachable, or the
``error`` it answered. :meth:`DaemonClient.send` is safe to retry: it sends one
``Idempotency-Key`` per call and, after a timeout or a broken connection, tries once
more with the same key, so a message the daemon stored before the answer was lost is
not stored twice.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import httpx

from harness.daemon.serve import DaemonInfo
from harness.errors import DaemonError

__all__ = ["DaemonClient"]


def _run_path(run_id: str, *rest: str) -> str:
    """``/runs/<id>/...`` with the id escaped: a ``/`` or ``?`` in it stays part of the id."""
    return "/".join(["/runs", quote(run_id, safe=""), *rest])


class DaemonClient:
    """The daemon at ``info`` with ``token``; ``transport`` replaces httpx's in tests."""

    def __init__(
        self,
        info: DaemonInfo,
        token: str,
        *,
        timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=info.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> Any:
        try:
            r = self._http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DaemonError(f"cannot reach harness serve: {exc}") from None
        return self._answer(r)

    @staticmethod
    def _answer(r: httpx.Response) -> Any:
        """The JSON of a response; DaemonError with the daemon's one line for a 4xx/5xx."""
        try:
            data = r.json() if r.content else {}
        except ValueError:
            data = {}
        if r.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            raise DaemonError(str(error or r.text or r.reason_phrase), status=r.status_code)
        return data

    def launch(self, spec: dict[str, Any], source: str) -> str:
        return str(self._call("POST", "/runs", {"spec": spec, "source": source})["id"])

    def launch_preset(self, preset: str, overrides: list[str]) -> str:
        """Start a preset of the daemon's with ``--set`` items (``args.steps=200``)."""
        return str(self._call("POST", "/runs", {"preset": preset, "set": overrides})["id"])

    def run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", _run_path(run_id))
        return result

    def runs(self, *, active: bool = False) -> list[dict[str, Any]]:
        """The latest runs (at most 100), newest first; ``active``: only those not ended."""
        return list(self._call("GET", "/runs?active=1" if active else "/runs")["runs"])

    def abort(self, run_id: str, reason: str, *, by: str = "terminal") -> None:
        self._call("POST", _run_path(run_id, "abort"), {"reason": reason, "by": by})

    def set_controls(self, run_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into the run's live controls; the controls the job reads now."""
        result: dict[str, Any] = self._call("POST", _run_path(run_id, "controls"), changes)
        return dict(result["controls"])

    def send(self, text: str, *, key: str | None = None) -> list[int]:
        """Queue ``text``; the ids of its rows. Retried once, same key, on a lost answer."""
        headers = {"Idempotency-Key": key or secrets.token_urlsafe(24)}
        body = {"text": text}
        try:
            r = self._http.post("/send", json=body, headers=headers)
        except httpx.TransportError:  # a timeout or a broken connection: the answer is lost
            return list(self._call("POST", "/send", body, headers=headers)["ids"])
        return list(self._answer(r)["ids"])

    def heartbeat(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/heartbeat")
        return result
