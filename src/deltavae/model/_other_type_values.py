"""Values of another type than a model's categories that are none of them as text either
(``refuse_other_type``'s case without an ``astype`` line)."""

from __future__ import annotations


def refuse_unmatched(
    column: str, known: list, given: list, what: str, kind: str, same_kind: bool
) -> None:
    """Refuse ``given`` (of ``column``) where none of them is one of ``known`` as text: an
    ``astype`` advice gave new categories ("0", "1" for the model's "B", "T") or failed
    (``astype(int)`` of "B"). Returns where the types are alike (``same_kind``) or some
    match: converting the type is the fix."""
    if same_kind or {str(v) for v in given} & {str(v) for v in known}:
        return
    raise ValueError(
        f"{column} holds {what} as another type, none of them the model's as text either: "
        f"the model was trained on {kind} values ({known[:5]}), the column holds "
        f"{given[:5]}. Map each of them to the model's value it stands for, e.g. {column} = "
        f"{column}.map({{{given[0]!r}: <the model's value for {given[0]!r}>, ...}})."
    )
