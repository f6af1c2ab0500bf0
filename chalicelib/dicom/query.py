"""The typed Search Transaction request that `qido.parse_qido_query` builds and
`matching.matches` decides on, PS3.18 §10.6.1 (Search Transaction, 2025b).

Pure data, imported by both without a cycle. `InvalidQuery` is the parser's refusal; the QIDO
service answers it 400 (STYLE.md rule 14: `dicom/` knows no HTTP).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from chalicelib.dicom.tags import Level

MatchKind = Literal[
    "universal", "empty", "single", "wildcard", "range", "uids", "sequence", "datetime"
]


UNSIGNED_INT = re.compile(r"[0-9]+")
"""A non-negative integer in a query, ASCII digits only (`int()` and `str.isdigit` take "²")."""


class InvalidQuery(ValueError):
    """A malformed value of a known query parameter; the message names it, the value and
    the rule."""


@dataclass(frozen=True)
class AttributeMatch:
    """One Key Attribute of a query, already parsed and validated.

    `values` holds the key values (`single`, `wildcard`: any of them matches, or every one when
    `all_values`), the UIDs (`uids`), or the two bounds (`range`, "" when open). A `sequence`
    key matches through its `items` (PS3.4 §C.2.2.2.6). A `datetime` key is a Date and a Time
    key matched as one range (`values`: two DT bounds, "" when open; `items`: the date and the
    time key as given), see `matching.combine_date_time`.
    """

    tag: str
    keyword: str
    vr: str
    kind: MatchKind
    values: tuple[str, ...] = ()
    all_values: bool = False
    items: tuple[AttributeMatch, ...] = ()


@dataclass(frozen=True)
class QidoQuery:
    """A Search Transaction request, parsed once (PS3.18 §10.6.1, 2025b).

    `matches` includes the UIDs of the target resource path. `includefield` holds top-level
    tags; `include_all` is `includefield=all`. `warnings` are texts for `warning_header`.
    """

    level: Level
    matches: tuple[AttributeMatch, ...]
    limit: int
    offset: int = 0
    study_uid: str | None = None
    series_uid: str | None = None
    includefield: tuple[str, ...] = ()
    include_all: bool = False
    fuzzymatching: bool = False
    emptyvaluematching: bool = False
    multiplevaluematching: bool = False
    warnings: tuple[str, ...] = ()
