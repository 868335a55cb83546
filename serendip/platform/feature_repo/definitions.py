"""Feast declarations for Serendip (README 'Production path'): entity ``item_id`` and two feature views.

* ``item_clusters`` — the item's cluster path c1..c4 (path-style ids, e.g. ``3.1.0.2``) and each level's
  description; source ``data/item_clusters.parquet``, event time = when the cluster stage wrote
  item_clusters.
* ``item_serendipity`` — the MLLM's top-k serendipitous clusters for the item (ids,
  descriptions, scores, best first) and the model version; source
  ``data/item_serendipity.parquet``, event time = ``scored_at``.

This folder only declares (Feast imports every ``.py`` here, so no scripts live in it);
:mod:`serendip.platform.features` writes the sources, applies and materializes. Relative source
paths resolve against the repo folder, so every work-directory copy reads its own files.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, String

item = Entity(name="item_id", join_keys=["item_id"], value_type=ValueType.STRING,
              description="short-video item id (items.item_id)")

item_clusters_source = FileSource(name="item_clusters_source",
                                  path="data/item_clusters.parquet",
                                  timestamp_field="event_timestamp")

item_clusters = FeatureView(
    name="item_clusters",
    entities=[item],
    ttl=timedelta(days=365),          # the tree is rebuilt rarely; a year bounds stale rows
    schema=[Field(name=f"c{lvl}", dtype=String) for lvl in (1, 2, 3, 4)]
    + [Field(name=f"c{lvl}_description", dtype=String) for lvl in (1, 2, 3, 4)],
    source=item_clusters_source,
    online=True,
    tags={"owner": "serendip", "stage": "cluster"},
)

item_serendipity_source = FileSource(name="item_serendipity_source",
                                     path="data/item_serendipity.parquet",
                                     timestamp_field="scored_at")

item_serendipity = FeatureView(
    name="item_serendipity",
    entities=[item],
    ttl=timedelta(days=90),           # scoring runs are incremental; rows older than this are
                                      # treated as absent by historical retrieval
    schema=[Field(name="cluster_ids", dtype=Array(String)),
            Field(name="descriptions", dtype=Array(String)),
            Field(name="scores", dtype=Array(Float64)),
            Field(name="model_version", dtype=String)],
    source=item_serendipity_source,
    online=True,
    tags={"owner": "serendip", "stage": "score"},
)

recommend = FeatureService(name="recommend", features=[item_serendipity, item_clusters],
                           description="one online read per recommend request")
