"""Flags and README tables generated from a settings class, for every command that has settings.

The worker's settings (``MODERATION_*``, ``--name``), the console's (``MODERATION_REVIEW_*``,
``--review-name``) and the API's (``MODERATION_API_*``, ``--api-name``) are each one pydantic-settings
class; a flag per field and a README row per field come from the class, so flags, variables and docs
never drift apart. A flag wins over its variable, and ``none`` or ``null`` clears an optional setting.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from pydantic_settings import BaseSettings

_NONE_WORDS = {"none", "null"}


@dataclass(frozen=True)
class SettingsFlags:
    """How one settings class appears on the command line: ``--{flag_prefix}name`` into
    ``args.{dest_prefix}__name``, documented as ``{env_prefix}NAME``."""

    model: type[BaseSettings]
    env_prefix: str
    flag_prefix: str = ""
    dest_prefix: str = "setting"
    title: str = "settings"

    def flag(self, name: str) -> str:
        return "--" + self.flag_prefix + name.replace("_", "-")

    def parent(self) -> argparse.ArgumentParser:
        """A parent parser with one flag per field."""
        parent = argparse.ArgumentParser(add_help=False)
        group = parent.add_argument_group(f"{self.title} (each also {self.env_prefix}<NAME>)")
        for name, field in self.model.model_fields.items():
            group.add_argument(
                self.flag(name),
                dest=f"{self.dest_prefix}__{name}",
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=field.description,
            )
        return parent

    def overrides(self, args: argparse.Namespace) -> dict[str, str | None]:
        prefix = f"{self.dest_prefix}__"
        return {
            key.removeprefix(prefix): None if value.lower() in _NONE_WORDS else value
            for key, value in vars(args).items()
            if key.startswith(prefix)
        }

    def from_args(self, args: argparse.Namespace) -> BaseSettings:
        return self.model(**self.overrides(args))

    def variables(self) -> list[str]:
        return [self.env_prefix + name.upper() for name in self.model.model_fields]

    def markdown(self, *, computed: dict[str, str] | None = None) -> str:
        """One README row per field: the variable, the flag, the default, the description."""
        rows = ["| Environment variable | Flag | Default | Description |", "|---|---|---|---|"]
        for name, field in self.model.model_fields.items():
            if computed and name in computed:
                shown = computed[name]
            elif field.default_factory is not None:
                shown = "(computed)"
            elif isinstance(field.default, frozenset):
                shown = ",".join(sorted(field.default))
            elif isinstance(field.default, tuple):
                shown = ",".join(field.default)
            else:
                shown = "unset" if field.default is None else str(field.default)
            description = (field.description or "").replace("|", "\\|")
            variable = self.env_prefix + name.upper()
            rows.append(f"| `{variable}` | `{self.flag(name)}` | `{shown or '(none)'}` | {description} |")
        return "\n".join(rows)
