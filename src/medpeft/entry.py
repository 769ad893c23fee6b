"""The ``medpeft`` command: skip the optional packages no command uses, then run the CLI."""
from __future__ import annotations

from medpeft.startup import skip_unused_optional_packages


def main() -> None:
    skip_unused_optional_packages()  # before the CLI's imports reach MONAI
    from medpeft.cli import app
    app()
