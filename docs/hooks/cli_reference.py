"""MkDocs hook: the command line reference, generated from the argparse parsers themselves
(`rosetta_tools.cli.main.build_parser`), so `rosetta COMMAND --help` and the page cannot disagree. It replaces the
marker `<!-- cli-reference -->` of cli.md with each command's help at a fixed width of 88 columns."""

from __future__ import annotations

import argparse
import os

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import Files
from mkdocs.structure.pages import Page

MARKER = "<!-- cli-reference -->"
WIDTH = "88"  # wider help scrolls sideways in the content column


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def reference() -> str:
    from rosetta_tools.cli.main import COMMANDS, build_parser

    previous, os.environ["COLUMNS"] = os.environ.get("COLUMNS"), WIDTH  # argparse reads the width from COLUMNS
    try:
        parser = build_parser()
        parts = ["## rosetta", "", "```text", parser.format_help().rstrip(), "```", ""]
        commands = subcommands(parser)
        for name in COMMANDS:
            parts += [f"## rosetta {name}", "", "```text", commands[name].format_help().rstrip(), "```", ""]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown
