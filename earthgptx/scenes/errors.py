"""Why a scene is refused. A refusal is permanent: the same bytes with the same metadata are refused again."""

from __future__ import annotations

from typing import Literal

RejectionKind = Literal["not_geotiff", "too_large", "invalid"]


class SceneRejected(ValueError):
    """The scene cannot be ingested as sent; ``reason`` says what is wrong in words a ground station can act on.

    ``kind`` sorts refusals for an HTTP answer: ``not_geotiff`` (415), ``too_large`` (413), ``invalid`` (422).
    """

    def __init__(self, reason: str, kind: RejectionKind = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind: RejectionKind = kind
