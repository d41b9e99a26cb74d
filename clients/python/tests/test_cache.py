"""The cache decorator over the real Cache service, sync and async."""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, List

import pytest

import permitd

from .conftest import require_service, run


@pytest.fixture(autouse=True)
def _needs_cache(client: permitd.Client) -> None:
    require_service(client, "Cache")


def ns() -> str:
    return f"py-test-{uuid.uuid4().hex[:12]}"


def test_cached_calls_once_per_arguments(client: permitd.Client) -> None:
    calls: List[Any] = []

    @client.cached(ns(), ttl=60)
    def predict(text: str, model: str = "small", *, temperature: float = 0.0) -> Dict[str, Any]:
        calls.append((text, model, temperature))
        return {"label": text.upper(), "model": model}

    assert predict("hi") == {"label": "HI", "model": "small"}
    assert predict(text="hi") == {"label": "HI", "model": "small"}  # same call, bound by name
    assert predict("hi", "small", temperature=0.0) == {"label": "HI", "model": "small"}
    assert len(calls) == 1
    predict("hi", model="large")
    predict("ho")
    assert len(calls) == 3
    assert predict.cache_key("hi") == predict.cache_key(text="hi", model="small")
    assert predict.__name__ == "predict"


def test_cached_keys_are_stable_and_dict_order_free(client: permitd.Client) -> None:
    name = ns()
    calls: List[Any] = []

    @client.cached(name, ttl=60, name="features")
    def features(d: Dict[str, int]) -> int:
        calls.append(d)
        return sum(d.values())

    assert features({"a": 1, "b": 2}) == 3
    assert features({"b": 2, "a": 1}) == 3
    assert len(calls) == 1
    # The key is a SHA-256 of a canonical form: the same in any process.
    assert features.cache_key({"a": 1, "b": 2}) == permitd.stable_hash(
        {"fn": "features", "arguments": {"d": {"a": 1, "b": 2}}}
    )
    assert client.cache_get(name, features.cache_key({"a": 1, "b": 2})) == b"3"


def test_cached_ttl_and_invalidate(client: permitd.Client) -> None:
    calls: List[int] = []

    @client.cached(ns(), ttl=1.0)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert square(3) == 9 and square(3) == 9 and len(calls) == 1
    time.sleep(1.1)
    assert square(3) == 9 and len(calls) == 2  # expired
    assert square.invalidate(3) is True
    assert square(3) == 9 and len(calls) == 3


def test_cached_custom_codec(client: permitd.Client) -> None:
    @client.cached(ns(), ttl=60, encode=lambda b: b, decode=lambda b: b)
    def blob(n: int) -> bytes:
        return bytes(range(n))

    assert blob(5) == bytes(range(5)) and blob(5) == bytes(range(5))


def test_unhashable_arguments_raise_before_any_call(client: permitd.Client) -> None:
    calls: List[Any] = []

    @client.cached(ns(), ttl=60)
    def f(x: Any) -> int:
        calls.append(x)
        return 1

    with pytest.raises(TypeError):
        f(object())
    with pytest.raises(TypeError):
        f(1, 2)  # does not bind to the signature
    assert calls == []


def test_async_cached(target: str) -> None:
    calls: List[str] = []

    async def main() -> None:
        async with permitd.AsyncClient(target) as c:

            @c.cached(ns(), ttl=60)
            async def embed(text: str) -> List[float]:
                calls.append(text)
                return [float(len(text)), 0.5]

            assert await embed("abc") == [3.0, 0.5]
            assert await embed(text="abc") == [3.0, 0.5]
            assert await embed("abcd") == [4.0, 0.5]
            assert calls == ["abc", "abcd"]
            assert await embed.invalidate("abc") is True
            await embed("abc")
            assert calls == ["abc", "abcd", "abc"]
            with pytest.raises(TypeError):

                @c.cached("x")
                def not_async() -> None: ...

    run(main())
