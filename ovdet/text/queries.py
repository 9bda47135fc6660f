"""The query list checked at the boundary: no torch, so a CLI refuses a bad query before any heavy import."""

from __future__ import annotations

MAX_QUERY_CHARS = 2000  # longer queries are refused: CLIP's context holds a few hundred characters


def validate_queries(queries) -> list[str]:
    """Check a query list at the boundary; returns the queries stripped of outer whitespace.

    Refused with a ValueError that names the culprit: an empty list, a non-string or blank query,
    one over `MAX_QUERY_CHARS` (CLIP reads a few hundred characters at most), and duplicates:
    detections are labelled by query position, so a repeated query would report every box twice
    under two labels. Case variants ("Cat", "cat") are distinct queries.
    """
    if isinstance(queries, str):
        queries = [queries]
    queries = list(queries)
    if not queries:
        raise ValueError("the query list is empty; give at least one text query, e.g. -q 'red umbrella'")
    bad = [q for q in queries if not isinstance(q, str) or not q.strip()]
    if bad:
        raise ValueError(f"queries must be non-empty strings, got {bad[:5]!r}")
    stripped = [q.strip() for q in queries]
    long = [i for i, q in enumerate(stripped) if len(q) > MAX_QUERY_CHARS]
    if long:
        raise ValueError(
            f"query {long[0]} is {len(stripped[long[0]])} characters long; CLIP reads at most a few hundred "
            f"(its context is 77 tokens): shorten it to under {MAX_QUERY_CHARS} characters"
        )
    seen: dict[str, int] = {}
    for i, q in enumerate(stripped):
        if q in seen:
            raise ValueError(
                f"query {q!r} is given twice (positions {seen[q]} and {i}); give each query once, "
                "since detections are labelled by query position"
            )
        seen[q] = i
    return stripped
