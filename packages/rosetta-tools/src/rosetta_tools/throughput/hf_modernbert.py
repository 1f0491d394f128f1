"""HF transformers' ModernBertModel as a peer: rosetta's canonical weights in ModernBERT's names (the whole model:
ModernBERT's embedding front is rosetta's, so nothing of rosetta's runs in front of it), through the same
`HF_MODERNBERT` table and family record `rosetta convert` uses. NumPy only here; the torch worker builds it."""

from __future__ import annotations

import importlib.metadata
import importlib.util

from rosetta_common import EncoderConfig, WeightFormatError
from rosetta_tools.layouts.hf_families import FAMILY_OF_LAYOUT

FAMILY = FAMILY_OF_LAYOUT["hf-modernbert"]
FIRST_VERSION = (4, 48)  # transformers added ModernBERT in 4.48


def config_kwargs(config: EncoderConfig) -> dict:
    """`transformers.ModernBertConfig(**kwargs)` for `config`: its config.json without the class-level fields, no
    compiled sub-modules (`reference_compile`), sdpa attention (transformers' default without flash-attn)."""
    written = FAMILY.write_config(config)
    kwargs = {name: value for name, value in written.items() if name not in ("architectures", "model_type")}
    return {**kwargs, "reference_compile": False, "attn_implementation": "sdpa"}


def skip_reason(config: EncoderConfig) -> str | None:
    """Why transformers' ModernBertModel cannot run `config` here, or None."""
    try:
        FAMILY.check_holds(config)
    except WeightFormatError as err:
        return f"transformers' ModernBertModel cannot hold this encoder ({str(err).split(': ', 1)[-1]})"
    if importlib.util.find_spec("transformers") is None:
        return "transformers is not installed (pip install './packages/rosetta-tools[hf]')"
    version = importlib.metadata.version("transformers")
    if tuple(int(part) for part in version.split(".")[:2]) < FIRST_VERSION:
        return f"transformers {version} has no ModernBERT (added in 4.48)"
    return None
