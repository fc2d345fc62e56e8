"""The ``data:`` section of ``standby.yaml``: where training pairs are stored, how they are split
and filtered, and how the materializer reads the bus. Every key is also a ``standby data`` flag
(``test_fraction`` -> ``--test-fraction``); a flag given on the command line wins.

``standby.config.Settings`` holds this section, so this module must not import that one: it
repeats ``Strict``'s two settings instead (unknown keys rejected, frozen)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

Chars = Annotated[int, Field(ge=0)]


class DataConfig(BaseModel):
    """Pair store, held-out split, length filters, materializer batching."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = Field(
        default="sqlite:///./.standby/pairs.db",
        description="The pair store: sqlite:///relative/path.db or sqlite:////absolute/path.db",
    )
    test_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1,
        description="Share of prompts held out in test_sft, assigned by a hash of prompt_id. "
        "A pair keeps its split for life, even if this value changes later.",
    )
    min_prompt_chars: Chars = Field(default=1, description="Shorter prompts are rejected.")
    max_prompt_chars: Chars = Field(default=32_000, description="Longer prompts are rejected.")
    min_response_chars: Chars = Field(default=1, description="Shorter answers are rejected.")
    max_response_chars: Chars = Field(default=32_000, description="Longer answers are rejected.")
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=256, description="Events the materializer reads and writes per transaction."
    )
    block_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=5.0, description="How long the materializer waits for new events per poll."
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> DataConfig:
        for what in ("prompt", "response"):
            low, high = getattr(self, f"min_{what}_chars"), getattr(self, f"max_{what}_chars")
            if low > high:
                raise ValueError(f"min_{what}_chars ({low}) is above max_{what}_chars ({high})")
        return self
