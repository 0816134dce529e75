"""The Elasticsearch index templates: the mapping of the documents ``pipelines.convert.es_docs``
builds, kept beside them so a change to a document and to its mapping is one change.

No attribute value of any size or type gets a document refused: keywords have ``ignore_above``
(Lucene refuses a term over 32766 bytes, which refuses the whole document), attribute maps are
``flattened`` (one field whatever the keys: no mapping explosion, no conflict when a key is a
string in one document and a map in another), strings of other dynamic fields become keywords
with ``ignore_above``, and ``ignore_malformed`` covers numbers and dates that do not parse.
"""

from __future__ import annotations

from typing import Any

from otlp.signals import Signal
from pipelines.convert.es_docs import INDEX_PREFIX

# Lucene refuses a term over 32766 bytes, and a refused term refuses the whole document. Every
# keyword (and every leaf of a flattened field) longer than this many characters is kept in
# _source but not indexed: 8191 characters are at most 32764 UTF-8 bytes. Flattened leaves are
# indexed a second time as "<key>\0<value>", so theirs is lower, leaving room for the key.
KEYWORD_IGNORE_ABOVE = 8191
FLATTENED_IGNORE_ABOVE = 4096
# AnyValue nesting the edge lets through is 16 arrays/kvlists; a flattened field counts only
# object levels (arrays do not add one), so 16 nested kvlists under an attribute are 17.
FLATTENED_DEPTH_LIMIT = 32

_KEYWORD = {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
_DATE = {"type": "date_nanos"}
# Attribute maps of any shape: one field each, whatever the keys (no mapping explosion against
# index.mapping.total_fields.limit), and no mapping conflicts when a key holds a string in one
# document and a number or a map in another (every leaf is a keyword).
_ATTRIBUTES = {"type": "flattened", "ignore_above": FLATTENED_IGNORE_ABOVE,
               "depth_limit": FLATTENED_DEPTH_LIMIT}
_COUNT = {"type": "long"}

# Composable templates: the highest priority among those whose pattern matches wins, whole.
# Elasticsearch's OTel data plugin (x-pack otel-data, on Elastic deployments) installs
# ``traces-otel@template`` / ``logs-otel@template`` for ``traces-*.otel-*`` / ``logs-*.otel-*``
# at priority 120, with its own mappings (passthrough attributes, ECS aliases, geo points) that
# Elastic's views read: those must win where they exist. The stack's generic ``logs@template`` /
# ``traces@template`` (``logs-*-*``, ``traces-*-*``) are at 100 and know nothing of these
# documents: ours must win over them. So 110, on our own streams' names only.
TEMPLATE_PRIORITY = 110


def _common_mappings() -> dict[str, Any]:
    return {
        "@timestamp": _DATE,
        "data_stream": {"properties": {"type": _KEYWORD, "dataset": _KEYWORD, "namespace": _KEYWORD}},
        "trace_id": _KEYWORD,
        "span_id": _KEYWORD,
        "attributes": _ATTRIBUTES,
        "dropped_attributes_count": _COUNT,
        "resource": {"properties": {
            "attributes": _ATTRIBUTES, "dropped_attributes_count": _COUNT, "schema_url": _KEYWORD,
        }},
        "scope": {"properties": {
            "name": _KEYWORD, "version": _KEYWORD, "attributes": _ATTRIBUTES,
            "dropped_attributes_count": _COUNT, "schema_url": _KEYWORD,
        }},
    }


def index_template(signal: Signal, data_streams: bool) -> dict[str, Any]:
    """The composable template body for one signal's streams, ``traces-generic.otel-*`` or
    ``logs-generic.otel-*``, at ``TEMPLATE_PRIORITY`` (below Elastic's OTel templates, above
    the generic ``logs-*-*`` / ``traces-*-*`` ones).

    No attribute value of any size or type gets a document refused: keywords have
    ``ignore_above``, attribute maps are ``flattened`` (see ``_ATTRIBUTES``), strings of other
    dynamic fields become keywords with ``ignore_above``, and ``ignore_malformed`` covers
    numbers and dates that do not parse.
    """
    props = _common_mappings()
    if signal is Signal.TRACES:
        props.update({
            "parent_span_id": _KEYWORD,
            "trace_state": _KEYWORD,
            "name": _KEYWORD,
            "kind": _KEYWORD,
            "duration": _COUNT,
            "status": {"properties": {"code": _KEYWORD, "message": {"type": "text"}}},
            "dropped_events_count": _COUNT,
            "dropped_links_count": _COUNT,
            "events": {"properties": {"name": _KEYWORD, "timestamp": _DATE, "attributes": _ATTRIBUTES,
                                      "dropped_attributes_count": _COUNT}},
            "links": {"properties": {"trace_id": _KEYWORD, "span_id": _KEYWORD, "trace_state": _KEYWORD,
                                     "attributes": _ATTRIBUTES, "dropped_attributes_count": _COUNT}},
        })
    else:
        props.update({
            "observed_timestamp": _DATE,
            "severity_text": _KEYWORD,
            "severity_number": {"type": "byte"},
            "event_name": _KEYWORD,
            "body": {"properties": {"text": {"type": "text"}, "structured": _ATTRIBUTES}},
        })
    template: dict[str, Any] = {
        "index_patterns": [INDEX_PREFIX[signal] + "*"],
        "priority": TEMPLATE_PRIORITY,
        "template": {
            "settings": {
                "index.number_of_shards": 1,
                "index.auto_expand_replicas": "0-1",
                "index.mapping.ignore_malformed": True,
                "index.mapping.total_fields.limit": 2000,
                "index.mapping.total_fields.ignore_dynamic_beyond_limit": True,
            },
            "mappings": {
                "dynamic_templates": [
                    {"strings_as_keyword": {"match_mapping_type": "string", "mapping": _KEYWORD}},
                ],
                "properties": props,
            },
        },
        "_meta": {"managed_by": "telemetry-gateway"},
    }
    if data_streams:
        template["data_stream"] = {}
    return template
