"""The FastAPI application of sandmle-serve (routes, error bodies, batching through the
scheduler). Kept apart from sandmle/serve.py because FastAPI reads the handlers' real
annotations, so this module imports FastAPI at the top and must not postpone annotations.
"""

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sandmle.serve_format import RequestError, parse_request, response


def make_app(scheduler: Any, tokenizer: Any, model_name: str, max_model_len: int,
             default_max_tokens: int) -> Any:
    """The FastAPI application (routes: /v1/models, /v1/chat/completions, /v1/completions,
    /health)."""
    app = FastAPI(title="sandmle-serve")
    stop_ids = set(tokenizer.stop_ids)

    @app.exception_handler(RequestError)
    async def bad_request(_: Any, e: RequestError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=400)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "steps": scheduler.steps, "max_live": scheduler.max_live}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model",
                                            "created": 0, "owned_by": "sandmle",
                                            "max_model_len": max_model_len}]}

    async def complete(request: Request, chat: bool) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            raise RequestError("the request body is not valid JSON") from None
        prompt = parse_request(body, tokenizer, chat, max_model_len, default_max_tokens,
                               model_name)
        futures = [scheduler.submit(prompt.ids, prompt.max_tokens, prompt.seed + i,
                                    prompt.stop) for i in range(prompt.n)]
        try:
            done = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except (ValueError, RuntimeError) as e:
            return JSONResponse({"error": {"message": str(e), "type": "server_error",
                                           "param": None, "code": None}}, status_code=500)
        outputs = []
        for f in done:
            ids = f.tokens[:-1] if f.tokens and f.tokens[-1] in stop_ids else f.tokens
            outputs.append((tokenizer.decode(ids), f.finish_reason, len(f.tokens)))
        timing = {"start_step": [f.timing["start_step"] for f in done],
                  "end_step": [f.timing["end_step"] for f in done]}
        return JSONResponse(response(prompt, outputs, timing))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        return await complete(request, chat=False)

    return app
