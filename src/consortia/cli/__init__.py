"""The ``consortia`` command line.

Every public submodule of this package defines a click command or group named
``command``; :func:`main` adds them all, so a new command is a new module.
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from consortia import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="consortia")
def main() -> None:
    """consortia: federated medical research with exact, securely aggregated statistics."""


def _register() -> None:
    for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        cmd = getattr(module, "command", None)
        if isinstance(cmd, click.Command):
            main.add_command(cmd)


_register()
