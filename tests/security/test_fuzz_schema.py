"""Schema-driven fuzzing of every API route a `--nowebui --api` Easel serves (its own, the segment routes and the
bundled ControlNet extension's), over real HTTP on a loopback port.

The routes and their bodies come from the server's own `/openapi.json`: for each operation hypothesis draws
request bodies that fit the published schema (`from_schema` below reads the schema's types, bounds, enums and
`$ref`s), bodies that break it (every JSON type,
unknown fields) and query strings. Not one answer may be a 5xx, every 4xx names what was wrong, the worker stays
alive, a normal request works afterwards, and the server's memory returns to its baseline (within a margin far
below what a single decoded bomb would take). Bounded in count: a few examples per operation.
"""
from __future__ import annotations

import gc
import json
import time
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.security.conftest import one_worker_thread, wait_until_up
from webui.settings import UserSettings

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 12
MEMORY_MARGIN_BYTES = 150 * 1024 * 1024
SMALL = {"prompt": "fuzz", "width": 64, "height": 64, "steps": 1}

scalars = (st.none() | st.booleans() | st.integers(min_value=-2**64, max_value=2**64)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=16))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=3), max_leaves=6)


def from_schema(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that fit a JSON schema as FastAPI publishes it: `$ref`, `anyOf`/`oneOf`/`allOf`, `enum`/`const`,
    objects (required and optional properties, additional ones), arrays, strings, numbers with their bounds."""
    if depth > 6:
        return st.none()
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return from_schema(components.get("schemas", {}).get(name, {}), components, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(option, components, depth + 1) for option in schema[key]])
    if "allOf" in schema:
        return from_schema(schema["allOf"][0], components, depth + 1)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, components, depth) for k in kind])
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = [name for name in schema.get("required", []) if name in properties]
        optional = [name for name in properties if name not in required]
        extra = schema.get("additionalProperties")
        return st.fixed_dictionaries(
            {name: from_schema(properties[name], components, depth + 1) for name in required},
            optional={name: from_schema(properties[name], components, depth + 1) for name in optional},
        ) if not isinstance(extra, dict) or properties else st.dictionaries(
            st.text(max_size=8), from_schema(extra, components, depth + 1), max_size=3)
    if kind == "array":
        items = schema.get("items", {})
        return st.lists(from_schema(items, components, depth + 1) if items else junk,
                        min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=max(schema.get("minLength", 0), 24))
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if kind == "integer":
            return st.integers(min_value=None if low is None else int(low),
                               max_value=None if high is None else int(high)).filter(lambda v: abs(v) < 2**64)
        return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return junk


def body_strategy(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Bodies fitting `schema`, mixed with junk and with fitting objects that carry one unknown field."""
    fitting = from_schema(schema, components)
    with_unknown = fitting.filter(lambda value: isinstance(value, dict)).map(
        lambda value: {**value, "an_unknown_field": 1})
    return st.one_of(fitting, fitting, with_unknown, junk)


def query_strategy(parameters: list[dict[str, Any]]) -> st.SearchStrategy[dict[str, str]]:
    names = [p["name"] for p in parameters if p.get("in") == "query"] or ["x"]
    return st.dictionaries(st.sampled_from(names), st.sampled_from(["", "true", "0", "-1", "nan", "\u202e", "a" * 50]),
                           max_size=len(names))


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()
            if method in {"get", "post", "put", "delete", "patch"}]


def check_answer(what: str, response: httpx.Response) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:400])
    if response.status_code >= 400:
        data = response.json()
        named = data.get("detail") if isinstance(data, dict) else None
        assert named, (what, data)


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_every_route_in_the_schema_survives_fuzzing(serve) -> None:
    tight = UserSettings(max_side=64, max_pixels=64 * 64, max_steps=2, max_batch_size=2, max_batch_count=2,
                         max_prompt_chars=400, live_preview_every=0)
    easel, url = serve(nowebui=True, api=True, user=tight, max_upload_bytes=256 * 1024)
    one_worker_thread(easel)
    wait_until_up(url)
    client = httpx.Client(base_url=url, timeout=120)
    assert client.post("/sdapi/v1/txt2img", json=SMALL).status_code == 200
    spec = client.get("/openapi.json").json()
    components = spec.get("components", {})
    ops = operations(spec)
    paths = {path for _, path, _ in ops}
    assert {"/sdapi/v1/txt2img", "/sdapi/v1/extra-batch-images", "/easel/v1/segment", "/controlnet/detect"} <= paths

    baseline = rss()
    started = time.monotonic()
    sent: dict[str, int] = {}
    for method, path, op in ops:
        what = f"{method} {path}"
        schema = (op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema"))
        bodies = body_strategy(schema, components) if schema is not None else st.none()

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(body=bodies, query=query_strategy(op.get("parameters", [])))
        def send(body: Any, query: dict[str, str]) -> None:
            content = None if schema is None else json.dumps(body)
            headers = {"content-type": "application/json"} if content is not None else {}
            response = client.request(method, path, params=query, content=content, headers=headers)
            sent[what] = sent.get(what, 0) + 1
            check_answer(what, response)

        send()
    elapsed = time.monotonic() - started

    assert len(sent) == len(ops) and sum(sent.values()) >= len(ops) * 2, sent
    assert easel.engine.worker.alive
    assert client.post("/sdapi/v1/reload-checkpoint").status_code < 400
    after = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 5})
    assert after.status_code == 200, after.text
    grown = rss() - baseline
    print(f"fuzzed {sum(sent.values())} requests over {len(ops)} operations in {elapsed:.0f} s; "
          f"RSS {grown / 2**20:+.0f} MiB")
    assert grown < MEMORY_MARGIN_BYTES, f"memory grew by {grown / 2**20:.0f} MiB"
