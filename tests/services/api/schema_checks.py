"""A schemathesis check of this project (loaded by ``test_api_schema.py`` through ``SCHEMATHESIS_HOOKS``): every
4xx answer is the API's refusal, a JSON object ``{"error": <kind>, "reason": <sentence>}``, whatever route gave it
(the API's own, tipg's, titiler's, or ingest's passed through)."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.check
def refusals_have_the_error_shape(ctx: Any, response: Any, case: Any) -> None:
    if not 400 <= response.status_code < 500:
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"a {response.status_code} whose body is not JSON: {response.content[:200]!r}") from None
    if not isinstance(body, dict):
        raise AssertionError(f"a {response.status_code} whose body is not an object: {body!r}"[:300])
    for field in ("error", "reason"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise AssertionError(f"a {response.status_code} without a text {field!r}: {body!r}"[:300])
