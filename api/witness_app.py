"""The witness's HTTP face: ``POST /add-checkpoint`` (C2SP tlog-witness in spirit) for ``escrow
witness serve``.

A bank or regulator runs this next to nothing else: its own key, its own state file, the log's
public key. The logic is ``ledger.witness``; this module only moves bytes: the request body in,
the cosignature line (200, text/plain) or a refusal out (409 with ``text/x.tlog.size`` when the
log's idea of the witness's size is wrong, 409 text/plain for a rollback or fork, 400/403/404).
It needs no database and trusts nothing the log says beyond what the proofs establish.
"""

from __future__ import annotations

import base64

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ledger.witness import MAX_REQUEST_BYTES, SIZE_MEDIA_TYPE, AddCheckpoint, Refused, Witness


def witness_app(witness: Witness) -> FastAPI:
    """The witness application around one ``Witness`` (its key, the log's key, its state file)."""
    app = FastAPI(
        title="tuition-escrow witness",
        summary="Cosigns checkpoints of one log that extend the last one it cosigned.",
        version="0.1.0",
    )

    @app.post("/add-checkpoint", summary="Cosign a checkpoint that extends the last one")
    async def add_checkpoint(request: Request) -> Response:
        """The log submits ``old <size>``, the consistency proof (one base64 hash per line), an
        empty line and the checkpoint's signed note; the answer is this witness's cosignature
        line, or a refusal."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
            return PlainTextResponse("request too large\n", status_code=413)
        data = await request.body()
        try:
            # File locking and fsync block: off the event loop.
            line = await run_in_threadpool(witness.add_checkpoint, AddCheckpoint.parse(data))
        except Refused as refused:
            if refused.size is not None:
                return Response(f"{refused.size}\n", 409, media_type=SIZE_MEDIA_TYPE)
            return PlainTextResponse(refused.detail + "\n", status_code=refused.status)
        return PlainTextResponse(line)

    @app.get("/", summary="Who this witness is and what it last cosigned")
    def status() -> JSONResponse:
        """For the bank's own monitoring: the witness's verifier key, the log it follows and the
        size and root of the last checkpoint it cosigned."""
        state = witness.state()
        return JSONResponse(
            {
                "verifier_key": witness.key.verifier_key.encode(),
                "origin": witness.origin,
                "log_keys": [k.encode() for k in witness.log_keys],
                "size": state.size,
                "root": base64.b64encode(state.root).decode(),
            }
        )

    return app
