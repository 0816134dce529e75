"""The Elasticsearch from ``stack/`` does what the sink relies on, through the async client the
product uses: composable index templates over per-tenant indices, bulk writes with derived
``_id`` (so a redelivered batch overwrites instead of duplicating), search back."""

from __future__ import annotations

import uuid

import pytest
from elasticsearch import AsyncElasticsearch

from tests import stackenv

pytestmark = pytest.mark.integration


async def test_template_bulk_with_ids_then_search() -> None:
    stackenv.require("elasticsearch")
    run = uuid.uuid4().hex[:10]
    prefix = f"stack-check-{run}"
    index = f"{prefix}-tenant-a"
    es = AsyncElasticsearch(stackenv.ES_URL, request_timeout=30)
    try:
        await es.indices.put_index_template(
            name=prefix, index_patterns=[f"{prefix}-*"], priority=500,
            template={"settings": {"number_of_shards": 1, "number_of_replicas": 0},
                      "mappings": {"properties": {"@timestamp": {"type": "date_nanos"},
                                                  "tenant": {"type": "keyword"},
                                                  "attributes": {"type": "flattened"}}}},
        )
        ops: list[dict[str, object]] = []
        for i in range(10):
            ops.append({"index": {"_index": index, "_id": f"otlp_logs-0-{i}"}})
            ops.append({"@timestamp": "2026-01-01T00:00:00.000000001Z", "tenant": "a",
                        "attributes": {"k": str(i)}, "body": f"line {i}"})
        for _ in range(2):  # a redelivery of the same batch
            resp = await es.bulk(operations=ops, refresh="wait_for")
            assert not resp["errors"], resp
        count = await es.count(index=index)
        assert count["count"] == 10
        hits = await es.search(index=f"{prefix}-*", query={"term": {"attributes.k": "7"}})
        assert [h["_id"] for h in hits["hits"]["hits"]] == ["otlp_logs-0-7"]
        mapping = await es.indices.get_mapping(index=index)
        assert mapping[index]["mappings"]["properties"]["@timestamp"]["type"] == "date_nanos"
    finally:
        await es.options(ignore_status=404).indices.delete(index=f"{prefix}-*")
        await es.options(ignore_status=404).indices.delete_index_template(name=prefix)
        await es.close()
