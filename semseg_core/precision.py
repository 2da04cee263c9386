"""Mixed-precision names: the one vocabulary and parser that the trainer (SOLVER.AMP.DTYPE), the Predictor
(``amp=``) and the benchmarks (``--amp``) share.

The canonical names are torch's dtype names, ``float16`` and ``bfloat16``. The short forms ``fp16`` and
``bf16`` are accepted everywhere as the same thing (they are what most command lines and papers write), so a
name that works in one place works in every other. Anything else is an error that lists the choices.
"""
from typing import Optional

import torch

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
AMP_ALIASES = {"fp16": "float16", "bf16": "bfloat16"}
AMP_CHOICES = tuple(AMP_DTYPES) + tuple(AMP_ALIASES)


def amp_name(name: str, what: str = "amp") -> str:
    """The canonical name (``float16`` or ``bfloat16``) of ``name``; ``what`` names the setting in the error."""
    text = str(name)
    canonical = AMP_ALIASES.get(text, text)
    if canonical not in AMP_DTYPES:
        raise ValueError(f"{what} must be one of {', '.join(AMP_CHOICES)} (fp16 = float16, bf16 = bfloat16), "
                         f"got {text!r}")
    return canonical


def amp_dtype(name: Optional[str], what: str = "amp") -> Optional[torch.dtype]:
    """The torch dtype that ``name`` names; None stays None (no mixed precision)."""
    return None if name is None else AMP_DTYPES[amp_name(name, what)]
