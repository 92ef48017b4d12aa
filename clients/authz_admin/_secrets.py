"""Where tokens come from: the generator, stdin, a file or a hidden prompt, never a flag.

Flag values show in `ps` and in shell history, so no token is ever taken from one.
"""

from __future__ import annotations

import base64
import getpass
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from ._failures import NotAuthorized, UsageError

TOKEN_BYTES = 24  # the seed's recipe: 24 random bytes, base64

Prompt = Callable[[str], str]


def generate_token() -> str:
    """A new token: 24 random bytes from `secrets`, base64 (32 characters)."""
    return base64.b64encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii")


def strip_one_newline(text: str) -> str:
    """`text` without one trailing newline (`\\n` or `\\r\\n`), as `echo` and editors add."""
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def read_token(
    token_file: str | None,
    stdin: TextIO,
    *,
    what: str,
    confirm: bool,
    prompt: Prompt = getpass.getpass,
) -> str:
    """The token in `token_file`, else on stdin; from a terminal, asked for without echo.

    `what` names the token in prompts and errors ("new token", "token to check"); `confirm`
    asks twice at a terminal, for a token that can never be shown again.
    """
    if token_file is not None:
        token = strip_one_newline(_read_file(token_file, "--token-file"))
        source = f"--token-file {token_file}"
    elif stdin.isatty():
        token = prompt(f"{what}: ")
        if confirm and token and prompt(f"{what} again: ") != token:
            raise UsageError("the two tokens typed differ: nothing was sent")
        source = "the prompt"
    else:
        token = strip_one_newline(stdin.read())
        source = "stdin"
    if not token:
        raise UsageError(_nothing_read(what, source, new=confirm))
    return token


def _nothing_read(what: str, source: str, *, new: bool) -> str:
    """What to do when `source` gave no token: the other ways in, not the one just tried."""
    generate = ", or use --generate" if new else ""
    if source.startswith("--token-file"):
        return f"{source} holds no {what}: put the token in it, or pipe it into stdin{generate}"
    return (
        f"no {what} on {source}: pipe it into stdin or pass --token-file FILE{generate}; "
        "a token is never taken from a flag value"
    )


def read_admin_token(
    admin_token_file: str | None, environ: Mapping[str, str], *, needs: str
) -> str:
    """The admin token from `--admin-token-file`, else `AUTHZ_ADMIN_TOKEN`; `needs` names
    the permissions the command needs, for the message when there is none."""
    if admin_token_file is not None:
        token = strip_one_newline(_read_file(admin_token_file, "--admin-token-file"))
        if not token:
            raise NotAuthorized(
                f"--admin-token-file {admin_token_file} is empty: put a token with {needs} in it"
            )
        if problem := _header_problem(token):
            raise UsageError(
                f"--admin-token-file {admin_token_file}: once its one trailing newline is "
                f"stripped, the token {problem}: put the token alone in the file"
            )
        return token
    token = environ.get("AUTHZ_ADMIN_TOKEN", "")
    if not token:
        raise NotAuthorized(
            "no admin token: set AUTHZ_ADMIN_TOKEN, or pass --admin-token-file FILE, "
            f"to a token with {needs}"
        )
    if problem := _header_problem(token):
        raise UsageError(f"AUTHZ_ADMIN_TOKEN: the token {problem}: set it to the token alone")
    return token


def _header_problem(token: str) -> str | None:
    """Why `token` cannot travel in an `authorization` header, or None. Found here, before
    anything is sent, rather than as grpc's INTERNAL "Invalid metadata"."""
    if any(c.isspace() for c in token):
        return "holds whitespace (a newline, a space or a tab), which no token has"
    if not all("!" <= c <= "~" for c in token):
        return "holds characters other than printable ASCII, which a header cannot carry"
    return None


def _read_file(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read {flag} {path}: {reason}") from None
