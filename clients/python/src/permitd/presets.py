"""Rules for well-known APIs, for :mod:`permitd.httpx` and :mod:`permitd.requests`.

- :func:`openai`: OpenAI and OpenAI-compatible APIs (``/chat/completions``,
  ``/completions``, ``/responses``, ``/embeddings``): resource ``openai:<model>``, cost
  ``{"tokens": prompt + max output}`` reconciled from ``usage`` (and from a stream's final
  usage chunk, when the caller asked for it with ``stream_options.include_usage``).
- :func:`anthropic`: ``/v1/messages``: resource ``anthropic:<model>``, cost in
  ``input_tokens``, ``output_tokens`` and ``tokens`` (their sum), reconciled from ``usage``
  (a stream's ``message_start`` and ``message_delta``).

The prompt's size is estimated with ``tokenizer`` (a function of text to tokens); by default
``tiktoken`` when it is installed, else one token per four bytes. Define the resources
(``openai:gpt-4o`` ...) in permitd with the limits you know, or a guess to learn from.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Callable, Dict, List, Mapping, Optional

from .rules import Request, Rule

__all__ = ["anthropic", "estimate_tokens", "openai"]

Tokenizer = Callable[[str], int]

_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@-]")


def _default_tokenizer() -> Tokenizer:
    by_bytes: Tokenizer = lambda text: math.ceil(len(text.encode()) / 4)  # noqa: E731
    try:
        import tiktoken
    except ImportError:
        return by_bytes
    try:
        # The first use downloads the encoding: offline, estimate by bytes instead.
        enc = tiktoken.get_encoding("o200k_base")
    except Exception as e:  # noqa: BLE001 - any failure to load leaves the estimate
        logging.getLogger("permitd").warning("permitd: tiktoken unavailable (%s); estimating tokens by bytes", e)
        return by_bytes
    return lambda text: len(enc.encode(text, disallowed_special=()))


def _texts(value: Any) -> List[str]:
    """Every string of a prompt: a str, message contents, content parts ({"text": ...})."""
    out: List[str] = []
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for v in value:
            out.extend(_texts(v))
    elif isinstance(value, dict):
        for key in ("content", "text", "input", "prompt", "system", "instructions", "arguments"):
            if key in value:
                out.extend(_texts(value[key]))
    return out


def estimate_tokens(body: Mapping[str, Any], tokenizer: Tokenizer) -> int:
    """Prompt tokens of an OpenAI or Anthropic request body: its texts, plus a few tokens
    of framing per message (as the APIs count them)."""
    parts = [t for k in ("messages", "input", "prompt", "system", "instructions") if k in body for t in _texts(body[k])]
    messages = body.get("messages")
    framing = 4 * len(messages) if isinstance(messages, list) else 0
    return sum(tokenizer(t) for t in parts) + framing


def _model_resource(prefix: str) -> Callable[[Request], Optional[str]]:
    def resource(req: Request) -> Optional[str]:
        body = req.json()
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            return f"{prefix}:unknown"
        return f"{prefix}:{_UNSAFE.sub('-', model)[:180]}"

    return resource


def _int(v: Any) -> int:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else 0


def openai(
    *,
    host: Optional[str] = None,
    prefix: str = "openai",
    tokenizer: Optional[Tokenizer] = None,
    default_max_tokens: int = 1024,
    partition: Any = "",
    max_wait: Optional[float] = 60.0,
    priority: int = 0,
) -> List[Rule]:
    """Rules for an OpenAI-compatible API at ``host`` (None: any host). A request without
    ``max_tokens``/``max_completion_tokens``/``max_output_tokens`` reserves
    ``default_max_tokens`` for the answer; the answer's ``usage`` corrects it."""
    tok = tokenizer or _default_tokenizer()

    def cost(req: Request) -> Dict[str, int]:
        body = req.json()
        if not isinstance(body, dict):
            return {"tokens": default_max_tokens}
        prompt = estimate_tokens(body, tok)
        if req.path.endswith("/embeddings"):
            return {"tokens": prompt}
        out = 0
        for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
            out = _int(body.get(key))
            if out:
                break
        n = _int(body.get("n")) or 1
        return {"tokens": prompt + n * (out or default_max_tokens)}

    def usage(body: Any) -> Optional[Mapping[str, int]]:
        u = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(u, dict):
            return None
        total = _int(u.get("total_tokens")) or _int(u.get("input_tokens")) + _int(u.get("output_tokens"))
        return {"tokens": total} if total else None

    def stream_usage(event: Any, acc: Dict[str, int]) -> None:
        if not isinstance(event, dict):
            return
        # Chat completions: the last chunk carries "usage"; Responses: response.completed.
        u = event.get("usage")
        if not isinstance(u, dict) and isinstance(event.get("response"), dict):
            u = event["response"].get("usage")
        if isinstance(u, dict):
            got = usage({"usage": u})
            if got:
                acc.update(got)

    return [
        Rule(
            resource=_model_resource(prefix),
            host=host,
            path=r"^(/v\d+)?/(chat/completions|completions|responses|embeddings)$",
            methods=["POST"],
            partition=partition,
            cost=cost,
            usage=usage,
            stream_usage=stream_usage,
            max_wait=max_wait,
            priority=priority,
        )
    ]


def anthropic(
    *,
    host: Optional[str] = None,
    prefix: str = "anthropic",
    tokenizer: Optional[Tokenizer] = None,
    partition: Any = "",
    max_wait: Optional[float] = 60.0,
    priority: int = 0,
) -> List[Rule]:
    """Rules for the Anthropic Messages API at ``host`` (None: any host). Output tokens are
    reserved at ``max_tokens`` (which the API requires), as Anthropic's own limiter does."""
    tok = tokenizer or _default_tokenizer()

    def cost(req: Request) -> Dict[str, int]:
        body = req.json()
        if not isinstance(body, dict):
            return {}
        inp = estimate_tokens(body, tok)
        out = _int(body.get("max_tokens"))
        return {"input_tokens": inp, "output_tokens": out, "tokens": inp + out}

    def split(u: Mapping[str, Any]) -> Dict[str, int]:
        # Cache reads don't count toward Anthropic's input-token limit; cache writes do.
        inp = _int(u.get("input_tokens")) + _int(u.get("cache_creation_input_tokens"))
        return {"input_tokens": inp, "output_tokens": _int(u.get("output_tokens"))}

    def usage(body: Any) -> Optional[Mapping[str, int]]:
        u = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(u, dict):
            return None
        got = split(u)
        got["tokens"] = got["input_tokens"] + got["output_tokens"]
        return got

    def stream_usage(event: Any, acc: Dict[str, int]) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            u = event["message"].get("usage")
            if isinstance(u, dict):
                acc.update(split(u))
        elif kind == "message_delta" and isinstance(event.get("usage"), dict):
            # output_tokens is the running total of the answer so far.
            acc["output_tokens"] = _int(event["usage"].get("output_tokens"))
        if "input_tokens" in acc and "output_tokens" in acc:
            acc["tokens"] = acc["input_tokens"] + acc["output_tokens"]

    return [
        Rule(
            resource=_model_resource(prefix),
            host=host,
            path=r"^/v1/messages$",
            methods=["POST"],
            partition=partition,
            cost=cost,
            usage=usage,
            stream_usage=stream_usage,
            max_wait=max_wait,
            priority=priority,
        )
    ]
