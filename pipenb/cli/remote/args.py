"""Argument types the management commands share: lists, versions, counts, ``--param K=V``."""

from __future__ import annotations

import argparse

from pipenb.params import parse_params


def csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def version(text: str) -> int | str:
    if text == "latest":
        return text
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a version is a number or 'latest', not {text!r}"
        ) from None
    if v < 1:
        raise argparse.ArgumentTypeError("versions start at 1")
    return v


def instances(text: str) -> int | str:
    if text == "all":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"instances is 'all' or a number, not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("instances must be 1 or more (or 'all')")
    return n


def positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return n


def params(items: list[str]) -> dict[str, str]:
    """``k=v`` pairs as strings: the server converts them to the types the pipe declares."""
    return parse_params(items)
