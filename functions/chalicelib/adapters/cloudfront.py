"""Amazon CloudFront behind the CdnInvalidator port."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any


class CloudFrontInvalidator:
    """One `CreateInvalidation` per call on the distribution in front of the outputs. A
    wildcard path (`/outputs/<id>/*`) counts as one path however many objects it covers;
    CloudFront keeps at most 15 wildcard invalidations in progress per distribution and
    refuses more (TooManyInvalidationsInProgress): that error is raised to the caller."""

    def __init__(self, client: Any, distribution_id: str) -> None:
        self._client = client
        self._distribution = distribution_id

    def invalidate(self, paths: Sequence[str]) -> None:
        if not paths:
            return
        self._client.create_invalidation(
            DistributionId=self._distribution,
            InvalidationBatch={
                "Paths": {"Quantity": len(paths), "Items": list(paths)},
                "CallerReference": uuid.uuid4().hex,
            },
        )
