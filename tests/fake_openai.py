"""An offline stand-in for ``openai.OpenAI``: answers come from a function, responses are real openai types."""

from __future__ import annotations

import math

from openai.types.chat import ChatCompletion


def chat_completion(text: str, top_logprobs: dict[str, float] | None = None) -> ChatCompletion:
    """A ``ChatCompletion`` with one choice; ``top_logprobs`` (token -> log-prob) fills its first token's log-probs."""
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
    if top_logprobs is not None:
        choice["logprobs"] = {"content": [{
            "token": text, "logprob": top_logprobs.get(text, -math.inf), "bytes": None,
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top_logprobs.items()],
        }]}
    return ChatCompletion.model_validate({
        "id": "fake", "object": "chat.completion", "created": 0, "model": "fake", "choices": [choice],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })


class FakeClient:
    """``client.chat.completions.create(**kwargs)`` returns ``answer(kwargs)``; every call is recorded."""

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[dict] = []
        self.chat = self
        self.completions = self

    def create(self, **kwargs) -> ChatCompletion:
        self.calls.append(kwargs)
        result = self.answer(kwargs)
        return result if isinstance(result, ChatCompletion) else chat_completion(result)
