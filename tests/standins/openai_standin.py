"""A stand-in for vLLM's OpenAI-compatible server, written for the tests.

vLLM needs a GPU, and these test machines have none, so the vLLM adapter
(`serving.vllm_backend`) is tested against this small FastAPI server instead. It is NOT vLLM
and runs no model. It speaks the parts of vLLM's HTTP protocol the adapter uses, with
deterministic answers:

- `GET /health`: 200 with an empty body;
- `GET /v1/models`: the served model name, with its `max_model_len`;
- `POST /v1/completions` and `POST /v1/chat/completions`: the completion is the prompt's words
  in reverse order, repeated up to `max_tokens` words; a "token" is a whitespace-separated word,
  so `usage.prompt_tokens` is the prompt's word count (chat: all message contents together);
- errors in vLLM's shape, `{"error": {"message", "type", "param", "code"}}`: 404 NotFoundError
  for an unknown model, 400 BadRequestError for a malformed body or a prompt plus completion
  longer than `--max-model-len`, worded as vLLM words it.

It takes `vllm serve`'s command line (a positional model, then flags) and ignores the flags it
has no use for, so the adapter launches it with exactly the arguments it would give vLLM:

    python tests/standins/openai_standin.py [MODEL] --port P --served-model-name NAME
        [--max-model-len N] [--host H] [any other vllm serve flags]
"""

import argparse
import hashlib
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MAX_TOKENS = 16


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # like vLLM: unknown sampling fields are ignored


class CompletionRequest(_Open):
    model: str
    prompt: str | list[str]
    max_tokens: int | None = Field(default=DEFAULT_MAX_TOKENS, ge=0)
    stream: bool = False


class ChatMessage(_Open):
    role: str
    content: str


class ChatRequest(_Open):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    stream: bool = False


class StandinError(Exception):
    def __init__(self, status: int, kind: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.param = status, kind, message, param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.status,
            }
        }


def words(text: str) -> list[str]:
    return text.split()


def generate(prompt_words: list[str], n: int) -> str:
    """Deterministic 'generation': the prompt reversed, cycled to n words."""
    source = list(reversed(prompt_words)) or ["..."]
    return " ".join(source[i % len(source)] for i in range(n))


def budget(prompt_tokens: int, max_tokens: int | None, max_model_len: int) -> int:
    """How many tokens to produce; raises vLLM's 400 when the context cannot hold them."""
    if max_tokens is None:
        if prompt_tokens >= max_model_len:
            raise StandinError(
                400,
                "BadRequestError",
                f"This model's maximum context length is {max_model_len} tokens. However, your "
                f"request has {prompt_tokens} input tokens. Please reduce the length of the "
                "input messages.",
            )
        return min(DEFAULT_MAX_TOKENS, max_model_len - prompt_tokens)
    if prompt_tokens + max_tokens > max_model_len:
        raise StandinError(
            400,
            "BadRequestError",
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages or "
            "completion.",
        )
    return max_tokens


def make_app(served_model_name: str, max_model_len: int, root: str) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="vLLM stand-in (tests only)")
    created = int(time.time())

    @app.exception_handler(StandinError)
    async def _standin_error(_: Request, exc: StandinError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # vLLM answers a body that does not validate with 400, not FastAPI's 422.
        return JSONResponse(
            StandinError(400, "BadRequestError", str(exc.errors())).body(), status_code=400
        )

    def check(model: str, stream: bool) -> None:
        if model != served_model_name:
            raise StandinError(
                404, "NotFoundError", f"The model `{model}` does not exist.", "model"
            )
        if stream:
            raise StandinError(400, "BadRequestError", "the stand-in does not stream", "stream")

    def request_id(prefix: str, payload: Any) -> str:
        return f"{prefix}-{hashlib.sha256(repr(payload).encode()).hexdigest()[:16]}"

    @app.get("/health")
    def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": served_model_name,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": root,
                    "parent": None,
                    "max_model_len": max_model_len,
                }
            ],
        }

    @app.post("/v1/completions")
    def completions(req: CompletionRequest) -> dict[str, Any]:
        check(req.model, req.stream)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        choices, prompt_total, completion_total = [], 0, 0
        for i, prompt in enumerate(prompts):
            pw = words(prompt)
            n = budget(len(pw), req.max_tokens, max_model_len)
            choices.append(
                {
                    "index": i,
                    "text": generate(pw, n),
                    "logprobs": None,
                    "finish_reason": "length",
                    "stop_reason": None,
                }
            )
            prompt_total += len(pw)
            completion_total += n
        return {
            "id": request_id("cmpl", prompts),
            "object": "text_completion",
            "created": int(time.time()),
            "model": served_model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_total,
                "completion_tokens": completion_total,
                "total_tokens": prompt_total + completion_total,
            },
        }

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> dict[str, Any]:
        check(req.model, req.stream)
        pw = [w for m in req.messages for w in words(m.content)]
        limit = req.max_completion_tokens if req.max_completion_tokens is not None else None
        n = budget(len(pw), limit if limit is not None else req.max_tokens, max_model_len)
        return {
            "id": request_id("chatcmpl", [m.content for m in req.messages]),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served_model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generate(pw, n)},
                    "logprobs": None,
                    "finish_reason": "length",
                }
            ],
            "usage": {
                "prompt_tokens": len(pw),
                "completion_tokens": n,
                "total_tokens": len(pw) + n,
            },
        }

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="standin-model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--max-model-len", type=int, default=2048)
    args, _ignored = parser.parse_known_args(argv)

    import uvicorn

    app = make_app(args.served_model_name, args.max_model_len, args.model)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
