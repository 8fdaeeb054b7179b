"""The JSON Schema of ``forge.json`` (format ``forge-plugin/1``), checked with jsonschema.

See docs/architecture.md ("Plugins") for the meaning of each field. Extra keys are
allowed (later formats add fields); the keys listed here are required.
"""

from __future__ import annotations

FORMAT = "forge-plugin/1"

_NUMBER_OR_INF = {"anyOf": [{"type": "number"}, {"const": "inf"}]}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

PLUGIN_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "toolkit_version", "site", "kind", "base", "lora", "dp", "parents"],
    "properties": {
        "format": {"const": FORMAT},
        "toolkit_version": {"type": "string"},
        "site": {"type": "string", "minLength": 1},
        "kind": {"enum": ["trained", "merged"]},
        "base": {
            "type": "object",
            "required": ["name", "digest"],
            "properties": {"name": {"type": "string", "minLength": 1}, "digest": _SHA256, "settings": {"type": "object"}},
        },
        "lora": {
            "type": "object",
            "required": ["rank", "alpha", "targets", "ffa"],
            "properties": {
                "rank": {"type": "integer", "minimum": 1},
                "alpha": {"type": "number", "exclusiveMinimum": 0},
                "targets": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "ffa": {"type": "boolean"},
                "ffa_seed": {"type": ["integer", "null"]},
                "dropout": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
        "training": {"type": "object"},
        "dp": {
            "type": "object",
            "required": ["enabled", "epsilon"],
            "properties": {
                "enabled": {"type": "boolean"},
                "epsilon": _NUMBER_OR_INF,
                "delta": {"type": ["number", "null"]},
                "noise_multiplier": {"type": ["number", "null"]},
                "sample_rate": {"type": ["number", "null"]},
                "steps": {"type": ["integer", "null"]},
                "max_grad_norm": {"type": ["number", "null"]},
                "accountant": {"type": ["string", "null"]},
            },
        },
        "data": {
            "type": "object",
            "required": ["name", "rows"],
            "properties": {"rows": {"type": "integer", "minimum": 0}, "n_classes": {"type": "integer", "minimum": 2}},
        },
        "parents": {"type": "array", "items": {"type": "object"}},
        "merge": {"type": ["object", "null"]},
        "adapter": {"type": "object", "required": ["sha256"], "properties": {"sha256": _SHA256}},
    },
    "allOf": [
        {"if": {"properties": {"kind": {"const": "trained"}}}, "then": {"required": ["training", "data"]}},
        # a trained plugin's DP record must back its claim: with DP, the full mechanism
        # (sigma, q, T, clipping norm, accountant, delta) from which epsilon is re-derived;
        # without DP, no finite epsilon may be claimed.
        {
            "if": {
                "required": ["kind", "dp"],
                "properties": {"kind": {"const": "trained"}, "dp": {"required": ["enabled"], "properties": {"enabled": {"const": True}}}},
            },
            "then": {
                "properties": {
                    "dp": {
                        "required": ["noise_multiplier", "sample_rate", "steps", "max_grad_norm", "accountant", "delta"],
                        "properties": {
                            "epsilon": {"anyOf": [{"type": "number", "minimum": 0}, {"const": "inf"}]},
                            "noise_multiplier": {"type": "number", "minimum": 0},
                            "sample_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                            "steps": {"type": "integer", "minimum": 0},
                            "max_grad_norm": {"type": "number", "exclusiveMinimum": 0},
                            "accountant": {"type": "string", "minLength": 1},
                            "delta": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                        },
                    }
                }
            },
        },
        {
            "if": {
                "required": ["kind", "dp"],
                "properties": {"kind": {"const": "trained"}, "dp": {"required": ["enabled"], "properties": {"enabled": {"const": False}}}},
            },
            "then": {"properties": {"dp": {"properties": {"epsilon": {"const": "inf"}}}}},
        },
    ],
}
