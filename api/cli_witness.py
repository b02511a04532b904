"""``escrow witness init | serve``: the witness a bank or regulator runs on its own machine.

``init`` creates the witness's Ed25519 key (a 0600 file) and an empty state file, and prints the
C2SP cosigner verifier key to register with ``POST /v1/witnesses``. ``serve`` answers the log's
``POST /add-checkpoint``: it cosigns a checkpoint only if it is signed by the log key given on the
command line (never a key the log hands over) and extends the last checkpoint this witness
cosigned. Neither command touches the escrow database.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from api.cli_common import err
from ledger import verifier, witness

witness_app = typer.Typer(
    help="Run a witness: cosign the log's checkpoints only if it never forks or rolls back.",
    no_args_is_help=True,
)

KeyFile = Annotated[Path, typer.Option("--key-file", help="The witness's private key (0600)")]
StateFile = Annotated[
    Path, typer.Option("--state-file", help="What the witness last cosigned (keep it, back it up)")
]


@witness_app.command("init")
def init(
    name: Annotated[
        str,
        typer.Option(
            "--name", help="The witness's key name, e.g. witness.bank-of-ningbo.example/w1"
        ),
    ],
    key_file: KeyFile,
    state_file: StateFile,
) -> None:
    """Create the witness key and an empty state; print the verifier key to register."""
    for path in (key_file, state_file):
        if path.exists():
            err.print(f"[red]{path} exists; a witness key or state is never overwritten[/red]")
            raise typer.Exit(2)
    try:
        key = witness.create_key_file(key_file, name)
        witness.create_state_file(state_file)
    except (OSError, ValueError) as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    err.print(
        f"witness key {name} written to {key_file} (mode 0600), empty state in {state_file}; "
        "register this verifier key with POST /v1/witnesses:"
    )
    sys.stdout.write(key.verifier_key.encode() + "\n")


@witness_app.command("serve")
def serve(
    key_file: KeyFile,
    state_file: StateFile,
    log_key: Annotated[
        list[str],
        typer.Option(
            "--log-key",
            help="The log's verifier key (GET /v1/audit/public-key, obtained out of band); "
            "repeat during a key rotation",
        ),
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
) -> None:
    """Answer the log's add-checkpoint requests with cosignatures."""
    import uvicorn

    from api.witness_app import witness_app as build

    try:
        keys = [verifier.VerifierKey.parse(text) for text in log_key]
        running = witness.Witness(witness.load_key_file(key_file), keys, state_file)
    except (OSError, ValueError) as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    state = running.state()
    err.print(
        f"witness {running.key.name} for log {running.origin} on http://{host}:{port}\n"
        f"  last cosigned size {state.size}; verifier key {running.key.verifier_key.encode()}"
    )
    uvicorn.run(build(running), host=host, port=port, log_level="info")


def register(app: typer.Typer) -> None:
    app.add_typer(witness_app, name="witness")
