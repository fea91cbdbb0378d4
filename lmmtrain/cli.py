"""The `lmmtrain` command line (stages and chat land with the training issue)."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Train and chat with LLaVA-style models.")


@app.callback()
def _root() -> None:
    """Two-stage training on lmmdata shards."""


def main() -> None:
    app()
