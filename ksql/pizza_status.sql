-- For users who run ksqlDB instead of `pizza serve merge`: the same merge of the five source
-- topics into pizza-status, as the original's ksqlDB statements do it.
CREATE STREAM IF NOT EXISTS PIZZA_ORDERED (order_id VARCHAR KEY, status INT, timestamp BIGINT)
  WITH (KAFKA_TOPIC='pizza-ordered', VALUE_FORMAT='JSON');
CREATE STREAM IF NOT EXISTS PIZZA_ASSEMBLED (order_id VARCHAR KEY, status INT, timestamp BIGINT)
  WITH (KAFKA_TOPIC='pizza-assembled', VALUE_FORMAT='JSON');
CREATE STREAM IF NOT EXISTS PIZZA_BAKED (order_id VARCHAR KEY, status INT, timestamp BIGINT)
  WITH (KAFKA_TOPIC='pizza-baked', VALUE_FORMAT='JSON');
CREATE STREAM IF NOT EXISTS PIZZA_DELIVERED (order_id VARCHAR KEY, status INT, timestamp BIGINT)
  WITH (KAFKA_TOPIC='pizza-delivered', VALUE_FORMAT='JSON');
CREATE STREAM IF NOT EXISTS PIZZA_PENDING (order_id VARCHAR KEY, status INT, timestamp BIGINT)
  WITH (KAFKA_TOPIC='pizza-pending', VALUE_FORMAT='JSON');

CREATE STREAM IF NOT EXISTS PIZZA_STATUS (order_id VARCHAR KEY, status INT, timestamp BIGINT)
  WITH (KAFKA_TOPIC='pizza-status', VALUE_FORMAT='JSON', PARTITIONS=6);

INSERT INTO PIZZA_STATUS SELECT order_id, status, timestamp FROM PIZZA_ORDERED EMIT CHANGES;
INSERT INTO PIZZA_STATUS SELECT order_id, status, timestamp FROM PIZZA_ASSEMBLED EMIT CHANGES;
INSERT INTO PIZZA_STATUS SELECT order_id, status, timestamp FROM PIZZA_BAKED EMIT CHANGES;
INSERT INTO PIZZA_STATUS SELECT order_id, status, timestamp FROM PIZZA_DELIVERED EMIT CHANGES;
INSERT INTO PIZZA_STATUS SELECT order_id, status, timestamp FROM PIZZA_PENDING EMIT CHANGES;
