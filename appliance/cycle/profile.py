"""Settings profiles layered under the operator's forge.toml (for `forge cycle --demo`)."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from pydantic import ValidationError

from appliance.config import Config, ForgeSettings, _read_toml
from appliance.errors import ConfigError, validation_problems

DEMO = Path(__file__).with_name("demo.toml")


def _merge(low: dict, high: dict) -> dict:
    out = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def with_profile(config: Config, profile: Path = DEMO) -> Config:
    """`config` with `profile`'s keys as defaults: keys of the operator's file still win."""
    raw = _read_toml(config.source) if config.source else {}
    merged = _merge(tomllib.loads(profile.read_text()), raw)
    try:
        settings = ForgeSettings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            f"the settings of {profile.name} with {config.source or 'the defaults'} are bad: "
            + "; ".join(validation_problems(exc)),
            "fix the keys named in forge.toml",
        ) from exc
    return dataclasses.replace(config, settings=settings)
