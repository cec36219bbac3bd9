"""API Gateway behind the UsageKeys port: each tenant's requests are counted and throttled
under an API key of its own, attached to the stack's usage plan (the authorizer returns the
key's value as usageIdentifierKey). The key is an API Gateway artefact, not the tenant's API
key: tenants never see it."""

from __future__ import annotations

from typing import Any


class UsagePlanNotFound(LookupError):
    """The usage plan the keys would join does not exist."""


class ApiGatewayUsageKeys:
    """Creates an API Gateway key per tenant and attaches it to one usage plan."""

    def __init__(self, client: Any, usage_plan_id: str) -> None:
        self._client = client
        self.usage_plan_id = usage_plan_id
        self._plan_checked = False

    def _check_plan(self) -> None:
        """Before the first key: a key created for a plan that does not exist would be left
        attached to nothing (moto, unlike API Gateway, does not refuse such a usage plan key)."""
        if self._plan_checked:
            return
        try:
            self._client.get_usage_plan(usagePlanId=self.usage_plan_id)
        except Exception as exc:
            code = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))
            if code == "NotFoundException":
                raise UsagePlanNotFound(f"no usage plan {self.usage_plan_id}") from exc
            raise
        self._plan_checked = True

    def create(self, tenant: str) -> str:
        self._check_plan()
        key = self._client.create_api_key(
            name=tenant,
            description=f"image pipeline tenant {tenant} (usage plan key, not its API key)",
            enabled=True,
            generateDistinctId=True,
        )
        try:
            self._client.create_usage_plan_key(
                usagePlanId=self.usage_plan_id, keyId=key["id"], keyType="API_KEY"
            )
        except Exception:
            self._client.delete_api_key(apiKey=key["id"])  # not left behind, attached to nothing
            raise
        return str(key["value"])
