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


# --------------------------------------------------------------------------------------------
# A judge that reads the benchmarks' real judge prompts, and an HTTP server speaking the OpenAI API
# --------------------------------------------------------------------------------------------
def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def mt_bench_rating(answer: str) -> int:
    """The fake MT-Bench judge's rating of an answer: 1 + its length in characters modulo 10."""
    return 1 + len(answer) % 10


def arena_hard_label(answer_a: str, answer_b: str) -> str:
    """The fake Arena-Hard verdict: the longer answer wins, by '>>' when longer by more than 10 characters."""
    diff = len(answer_a) - len(answer_b)
    if diff == 0:
        return "A=B"
    strong = ">>" if abs(diff) > 10 else ">"
    return f"A{strong}B" if diff > 0 else f"B{strong}A"


ALPACA_EVAL_WINNER_PROB = 0.9


def benchmark_judge(request: dict):
    """Answer an MT-Bench, Arena-Hard or AlpacaEval 2 judge request in that benchmark's own format.

    * MT-Bench (FastChat's single-answer prompts, one or two turns, with or without reference): the
      judged answer is the last assistant answer of the prompt; reply ``Rating: [[k]]`` with
      :func:`mt_bench_rating`.
    * Arena-Hard v0.1 (``<|User Prompt|>`` with assistants A and B): reply with the verdict label of
      :func:`arena_hard_label`.
    * AlpacaEval 2 (``weighted_alpaca_eval_gpt4_turbo``, outputs ``m`` and ``M``): one token, the longer
      output's identifier, with log-probs giving it probability 0.9 (``m`` on equal length).

    Anything else is an error: a request in another format fails the test that sent it.
    """
    messages = request["messages"]
    user = messages[-1]["content"] if len(messages) <= 2 else messages[1]["content"]
    if "[The Start of Assistant's Answer]" in user:  # MT-Bench, first turn
        answer = _between(user, "[The Start of Assistant's Answer]\n", "\n[The End of Assistant's Answer]")
        return f"The answer is judged.\n\nRating: [[{mt_bench_rating(answer)}]]"
    if "<|The Start of Assistant A's Conversation with User|>" in user:  # MT-Bench, second turn
        conversation = _between(user, "<|The Start of Assistant A's Conversation with User|>",
                                "<|The End of Assistant A's Conversation with User|>")
        answer = conversation.rsplit("### Assistant A:\n", 1)[1][: -len("\n\n")]
        return f"The second answer is judged.\n\nRating: [[{mt_bench_rating(answer)}]]"
    if "<|User Prompt|>" in user:  # Arena-Hard
        answer_a = _between(user, "<|The Start of Assistant A's Answer|>\n", "\n<|The End of Assistant A's Answer|>")
        answer_b = _between(user, "<|The Start of Assistant B's Answer|>\n", "\n<|The End of Assistant B's Answer|>")
        return f"Both answers are compared.\n\nMy final verdict is: [[{arena_hard_label(answer_a, answer_b)}]]"
    if '"model_identifier": "m"' in user:  # AlpacaEval 2
        output_m = _between(_between(user, '"model_identifier": "m"', "}"), '"output": """', '"""')
        output_big_m = _between(_between(user, '"model_identifier": "M"', "}"), '"output": """', '"""')
        winner, loser = ("m", "M") if len(output_m) >= len(output_big_m) else ("M", "m")
        return chat_completion(winner, {winner: math.log(ALPACA_EVAL_WINNER_PROB),
                                        loser: math.log(1 - ALPACA_EVAL_WINNER_PROB)})
    raise AssertionError(f"the fake judge got a prompt in no benchmark's format: {user[:200]!r}")


class FakeJudgeServer:
    """An OpenAI-compatible server on localhost: ``POST {base_url}/chat/completions`` answers with ``answer(request)``.

    Use as a context manager; ``base_url`` goes where an OpenAI base URL goes (``openai.OpenAI(base_url=...)``,
    ``EvalConfig.base_url``). Every request body is kept in ``calls``. A request without a bearer key is refused (401).
    """

    def __init__(self, answer=benchmark_judge):
        self.answer = answer
        self.calls: list[dict] = []
        self.base_url = ""

    def __enter__(self) -> "FakeJudgeServer":
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if not self.headers.get("Authorization", "").startswith("Bearer ") or self.headers["Authorization"] == "Bearer ":
                    return self._send(401, {"error": {"message": "no API key"}})
                server.calls.append(body)
                try:
                    result = server.answer(body)
                except Exception as err:  # reported to the client as a bad request, not retried
                    return self._send(400, {"error": {"message": f"{type(err).__name__}: {err}"}})
                result = result if isinstance(result, ChatCompletion) else chat_completion(result)
                self._send(200, result.model_dump(mode="json"))

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
