"""The counting conventions (DESIGN.md, "Conventions"): names of the N and C conventions every record
carries, and which N each FLOP convention multiplies."""

from __future__ import annotations

# C, training FLOPs per token: 6 N under each N convention, Kaplan's, and Hoffmann et al.'s Appendix F.
CONVENTIONS = ("6nd", "6nd_with_head", "6nd_total", "kaplan", "chinchilla")
# N, parameters: everything, Kaplan's non-embedding, non-embedding plus the head (Porian "standard").
PARAM_CONVENTIONS = ("non_embedding", "with_head", "total")
# The N that a FLOP convention multiplies: "tokens per parameter" rules use the same N as the budget.
PARAMS_OF_CONVENTION = {"6nd": "non_embedding", "kaplan": "non_embedding", "6nd_with_head": "with_head",
                        "6nd_total": "total", "chinchilla": "total"}


def params_of(convention: str) -> str:
    """The N convention of a FLOP convention (``non_embedding`` for one not listed)."""
    return PARAMS_OF_CONVENTION.get(convention, "non_embedding")
