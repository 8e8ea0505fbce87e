"""Entity documents as CEL values, built once per entity revision.

Converting a resource to CEL costs about as much as evaluating a selector over it; keyed by
(id, revision), the conversion happens once per change, whichever code path asks first.
"""

from __future__ import annotations

from typing import Any

from controller.cel import Doc
from controller.store.documents import resource_doc
from controller.store.tables import ResourceRow

_DOC_CACHE_LIMIT = 200_000
_doc_cache: dict[tuple[str, int], Doc] = {}


def cached_doc(resource_id: str, revision: int, data: dict[str, Any]) -> Doc:
    key = (resource_id, revision)
    doc = _doc_cache.get(key)
    if doc is None:
        if len(_doc_cache) >= _DOC_CACHE_LIMIT:
            _doc_cache.clear()
        doc = _doc_cache[key] = Doc(data)
    return doc


def cached(resource_id: str, revision: int) -> Doc | None:
    """The document of this revision if some code path built it already (readers that fetch only
    ``(id, revision)`` read whole rows for the misses alone)."""
    return _doc_cache.get((resource_id, revision))


def resource_doc_cached(row: ResourceRow) -> Doc:
    doc = _doc_cache.get((row.id, row.revision))
    return doc if doc is not None else cached_doc(row.id, row.revision, resource_doc(row))
